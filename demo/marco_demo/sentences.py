"""English sentences for the demo, written for this project: templates and word lists.

Two domains. The source domain is everyday talk (weather, food, travel, family,
hobbies) with no customer-service words. The target domain is a customer-service
phone line: orders, refunds, accounts, billing, with account and order numbers
and amounts spoken as words, as a caller says them. Both are generated from a
seeded ``random.Random``: the same seed gives the same sentences in the same order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


ONES = _split(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
)
TENS = _split("_ _ twenty thirty forty fifty sixty seventy eighty ninety")
ORDINALS = _split(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth "
    "twenty-first twenty-second twenty-third twenty-fourth twenty-fifth twenty-sixth "
    "twenty-seventh twenty-eighth"
)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def number_words(n: int) -> str:
    """0 ≤ n < 1000 in words, as spoken ("three hundred and twelve")."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_words covers 0..999, got {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + (f" {ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    head = f"{ONES[hundreds]} hundred"
    return head + (f" and {number_words(rest)}" if rest else "")


def digits_words(rng: random.Random, count: int) -> str:
    """An identifier read digit by digit, the way callers read account numbers."""
    return " ".join(ONES[rng.randrange(10)] for _ in range(count))


def amount_words(rng: random.Random) -> str:
    dollars, cents = rng.randrange(2, 400), rng.choice((0, 0, 5, 25, 49, 50, 75, 99))
    text = f"{number_words(dollars)} dollars"
    return text + (f" and {number_words(cents)} cents" if cents else "")


# ----------------------------------------------------------------------- source: everyday

PEOPLE = (
    "my sister", "my brother", "our neighbour", "my grandmother", "the teacher",
    "my best friend", "my aunt", "my uncle", "our cousin", "the old farmer",
    "my father", "my mother", "the new student", "the postman", "the baker",
)  # fmt: skip
PLACES = (
    "the park", "the beach", "the library", "the market", "the mountains", "the lake",
    "the old bridge", "the city centre", "the garden", "the museum", "the train station",
    "the forest", "the village square", "the river", "the zoo",
)  # fmt: skip
ACTIVITIES = (
    "going for a long walk", "reading a good book", "baking fresh bread", "playing chess",
    "painting the fence", "riding a bicycle", "watching the birds", "planting tomatoes",
    "learning to play the guitar", "swimming in the lake", "cooking a big dinner",
    "fixing the old radio", "writing letters", "singing in the choir", "flying a kite",
)  # fmt: skip
FOODS = (
    "apple pie", "vegetable soup", "fresh strawberries", "roasted potatoes", "lemon cake",
    "warm bread", "pasta with tomato sauce", "grilled fish", "rice and beans",
    "chocolate cookies", "a cup of tea", "hot coffee", "orange juice", "cheese sandwiches",
)  # fmt: skip
WEATHER = (
    "sunny and warm", "cold and windy", "cloudy all day", "rainy in the morning",
    "foggy near the coast", "bright but chilly", "hot and humid", "snowing in the hills",
)  # fmt: skip
CLOCK = ("o'clock", "thirty", "fifteen", "forty five")
WEEKDAYS = ("on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday",
            "on Saturday", "on Sunday")  # fmt: skip
PAST_DAYS = (*WEEKDAYS, "yesterday", "last weekend", "the day before yesterday")
NEXT_DAYS = (*WEEKDAYS, "tomorrow", "next week", "this weekend")
HABITS = ("every morning", "on Sundays", "in the summer", "after work", "at the weekend",
          "every evening", "on holidays")  # fmt: skip
ANIMALS = ("the dog", "the cat", "a small bird", "the horse", "a young fox",
           "a duck", "a grey rabbit", "the cow", "an owl", "the goat")  # fmt: skip
ADJECTIVES = ("quiet", "beautiful", "busy", "peaceful", "crowded", "lovely", "strange",
              "wonderful", "noisy", "tiny")  # fmt: skip
OBJECTS = ("umbrella", "blue scarf", "old camera", "garden chair", "map of the town",
           "wooden box", "red kite", "warm jacket", "picnic basket", "set of keys")  # fmt: skip

SOURCE_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"The weather was {r.choice(WEATHER)} {r.choice(PAST_DAYS)}.",
    lambda r: f"{_cap(r.choice(PEOPLE))} enjoys {r.choice(ACTIVITIES)} {r.choice(HABITS)}.",
    lambda r: f"We walked to {r.choice(PLACES)} and had {r.choice(FOODS)}.",
    lambda r: f"{_cap(r.choice(ANIMALS))} was sleeping near {r.choice(PLACES)}.",
    lambda r: f"{_cap(r.choice(PEOPLE))} made {r.choice(FOODS)} for everyone.",
    lambda r: f"I think {r.choice(PLACES)} is {r.choice(ADJECTIVES)} in the evening.",
    lambda r: f"Did you remember to bring the {r.choice(OBJECTS)} to {r.choice(PLACES)}?",
    lambda r: f"{_cap(r.choice(NEXT_DAYS))} we are {r.choice(ACTIVITIES)} with {r.choice(PEOPLE)}.",
    lambda r: (
        f"The bus to {r.choice(PLACES)} leaves at {number_words(r.randrange(1, 13))} "
        f"{r.choice(CLOCK)}."
    ),
    lambda r: (
        f"{_cap(r.choice(PEOPLE))} is {number_words(r.randrange(6, 96))} years old this year."
    ),
    lambda r: f"There were {number_words(r.randrange(3, 60))} people at {r.choice(PLACES)}.",
    lambda r: f"{_cap(r.choice(PEOPLE))} lost the {r.choice(OBJECTS)} near {r.choice(PLACES)}.",
    lambda r: f"It is {r.choice(WEATHER)}, so we will stay home and eat {r.choice(FOODS)}.",
    lambda r: f"After {r.choice(ACTIVITIES)}, {r.choice(PEOPLE)} fell asleep on the sofa.",
    lambda r: f"We saw {r.choice(ANIMALS)} and {r.choice(ANIMALS)} by {r.choice(PLACES)}.",
    lambda r: f"Please tell {r.choice(PEOPLE)} that dinner is {r.choice(FOODS)} tonight.",
)


# ----------------------------------------------------------------------- target: call centre

FIRST_NAMES = ("Sarah", "Michael", "Priya", "James", "Elena", "David", "Aisha", "Robert",
               "Mei", "Carlos", "Linda", "Omar", "Grace", "Thomas", "Nina")  # fmt: skip
PRODUCTS = ("wireless headphones", "coffee machine", "running shoes", "phone charger",
            "winter coat", "laptop bag", "kitchen scale", "desk lamp", "printer ink",
            "smart watch", "vacuum cleaner", "electric kettle", "gaming keyboard")  # fmt: skip
ACCOUNT_ACTIONS = ("reset my password", "update my billing address", "close my account",
                   "change the email on my account", "add a second card to my account",
                   "verify my identity", "unlock my account", "update my phone number")  # fmt: skip
BILLING_ISSUES = ("a duplicate charge", "a late fee", "an unexpected charge",
                  "a charge I do not recognise", "the wrong amount", "a cancelled subscription",
                  "an annual renewal fee", "a service fee")  # fmt: skip
PAYMENT_METHODS = ("credit card", "debit card", "bank transfer", "gift card",
                   "store credit", "PayPal account")  # fmt: skip
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")  # fmt: skip
AGENT_OPENERS = ("Thank you for calling customer support", "Thanks for holding",
                 "I can help you with that", "Let me pull up your account",
                 "I apologise for the inconvenience")  # fmt: skip
PLANS = ("premium plan", "basic plan", "family plan", "annual subscription",
         "monthly subscription", "business account")  # fmt: skip


def _date(r: random.Random) -> str:
    return f"the {r.choice(ORDINALS)} of {r.choice(MONTHS)}"


TARGET_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"My order number is {digits_words(r, 6)} and it has not arrived yet.",
    lambda r: f"I would like a refund for the {r.choice(PRODUCTS)} I ordered on {_date(r)}.",
    lambda r: f"My account number is {digits_words(r, 8)}.",
    lambda r: f"I was billed {amount_words(r)} but my invoice says {amount_words(r)}.",
    lambda r: f"There is {r.choice(BILLING_ISSUES)} on my statement from {r.choice(MONTHS)}.",
    lambda r: f"I need to {r.choice(ACCOUNT_ACTIONS)}, my account number is {digits_words(r, 8)}.",
    lambda r: f"{r.choice(AGENT_OPENERS)}, can I have your account number please?",
    lambda r: (
        f"{r.choice(AGENT_OPENERS)}, {r.choice(FIRST_NAMES)}, your refund of "
        f"{amount_words(r)} has been approved."
    ),
    lambda r: (
        f"The refund will go back to your {r.choice(PAYMENT_METHODS)} within "
        f"{number_words(r.randrange(3, 11))} business days."
    ),
    lambda r: f"I want to cancel my {r.choice(PLANS)} before the next billing cycle.",
    lambda r: f"Can you upgrade my account to the {r.choice(PLANS)}?",
    lambda r: (
        f"The tracking number for order {digits_words(r, 6)} shows it was delivered "
        "to the wrong address."
    ),
    lambda r: f"My {r.choice(PRODUCTS)} arrived damaged and I need a replacement or a refund.",
    lambda r: f"Please email me a return label for order number {digits_words(r, 6)}.",
    lambda r: (
        f"I paid {amount_words(r)} with my {r.choice(PAYMENT_METHODS)} and the payment failed."
    ),
    lambda r: f"Your current balance is {amount_words(r)}, due on {_date(r)}.",
    lambda r: f"I have been charged twice for my {r.choice(PLANS)} this month.",
    lambda r: f"Can I speak to a supervisor about my billing dispute from {r.choice(MONTHS)}?",
    lambda r: f"The last four digits of the card on the account are {digits_words(r, 4)}.",
    lambda r: (
        f"I placed order {digits_words(r, 6)} for a {r.choice(PRODUCTS)} and was "
        "charged the wrong price."
    ),
    lambda r: (
        f"Hi, this is {r.choice(FIRST_NAMES)}, I am calling about my refund for order "
        f"{digits_words(r, 6)}."
    ),
    lambda r: (
        f"To verify your account, {r.choice(FIRST_NAMES)}, please confirm the billing "
        f"postcode and the last {r.choice(('four', 'six'))} digits of your "
        f"{r.choice(PAYMENT_METHODS)}."
    ),
    lambda r: f"I applied a promo code but the discount of {amount_words(r)} is not on my invoice.",
    lambda r: (
        f"Your warranty claim for the {r.choice(PRODUCTS)} has reference number "
        f"{digits_words(r, 7)}."
    ),
)

#: Words that mark a sentence as customer-service talk (tests check each target sentence).
DOMAIN_VOCABULARY = frozenset(
    _split(
        """order orders refund refunds account accounts billing billed invoice charge charged
    charges payment balance statement subscription plan tracking return warranty promo
    card supervisor delivered replacement reference verify"""
    )
)


def words(sentence: str) -> list[str]:
    return re.findall(r"[a-z']+", sentence.lower())


def generate(
    templates: Sequence[Callable[[random.Random], str]], count: int, seed: int
) -> list[str]:
    """``count`` distinct sentences, cycling through the templates so that each is used.

    Templates with few combinations run out of new sentences early; cycling on
    attempts (not on successes) lets the richer templates fill the rest.
    """
    rng = random.Random(seed)
    sentences: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"could not find {count} distinct sentences (found {len(seen)})")
        sentence = templates[attempts % len(templates)](rng)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    rng.shuffle(sentences)
    return sentences


def source_sentences(count: int, seed: int) -> list[str]:
    return generate(SOURCE_TEMPLATES, count, seed)


def target_sentences(count: int, seed: int) -> list[str]:
    return generate(TARGET_TEMPLATES, count, seed)
