"""Sentences of the benchmark scenarios' target domains, written for this project.

One template set per scenario, each with its own vocabulary and none of the
demo's call-centre words (:data:`marco_demo.sentences.DOMAIN_VOCABULARY`):

- ``meeting``: a project meeting (agenda, sprints, budgets, action items);
- ``car``: in-car voice commands and navigation prompts;
- ``voip``: remote-work calls about connections, screens and software;
- ``radio``: dispatch and logistics radio traffic (held out until 6 December);
- ``clinic``: a doctor's dictated ward notes (held out).

The source side of every scenario is the demo's everyday talk
(:func:`marco_demo.sentences.source_sentences`): one generic clean corpus, as a
user fine-tunes from, and a target domain that differs from it in words as
well as in sound. Sentences come from :func:`marco_demo.sentences.generate`,
so the same seed gives the same sentences in the same order.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from marco_demo.sentences import ORDINALS, _cap, digits_words, generate, number_words

Template = Callable[[random.Random], str]

NAMES = ("Hannah", "Victor", "Deepa", "Marcus", "Ingrid", "Kenji", "Lucia", "Tobias",
         "Amara", "Felix", "Rosa", "Declan", "Yusuf", "Chloe")  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")

# ----------------------------------------------------------------------------- meeting

TOPICS = ("the quarterly review", "the product roadmap", "the hiring plan", "the budget forecast",
          "the design review", "the release schedule", "the customer survey",
          "the marketing launch", "the security audit", "the sprint retrospective")  # fmt: skip
DELIVERABLES = ("slide deck", "draft proposal", "test report", "project timeline",
                "risk register", "user research summary", "migration plan",
                "onboarding guide")  # fmt: skip
TEAMS = ("engineering", "design", "finance", "legal", "the data team", "operations",
         "the sales team", "research")  # fmt: skip

MEETING: tuple[Template, ...] = (
    lambda r: f"Let's move {r.choice(TOPICS)} to {r.choice(DAYS)} afternoon.",
    lambda r: f"Action item for {r.choice(NAMES)}: update the {r.choice(DELIVERABLES)}.",
    lambda r: f"Can {r.choice(TEAMS)} share the {r.choice(DELIVERABLES)} before {r.choice(DAYS)}?",
    lambda r: (
        f"We are {number_words(r.randrange(2, 30))} percent over budget on {r.choice(TOPICS)}."
    ),
    lambda r: f"{r.choice(NAMES)} will present {r.choice(TOPICS)} at the next stand up.",
    lambda r: f"The deadline for the {r.choice(DELIVERABLES)} is the {r.choice(ORDINALS)}.",
    lambda r: f"I think {r.choice(TEAMS)} needs {number_words(r.randrange(2, 9))} more weeks.",
    lambda r: f"Before we wrap up, does anyone have questions about {r.choice(TOPICS)}?",
    lambda r: (
        f"Sprint {number_words(r.randrange(3, 40))} closed with "
        f"{number_words(r.randrange(2, 25))} open tickets."
    ),
    lambda r: f"Please add {r.choice(NAMES)} from {r.choice(TEAMS)} to the invite.",
    lambda r: f"The stakeholders approved the {r.choice(DELIVERABLES)} on {r.choice(DAYS)}.",
    lambda r: f"Let's park {r.choice(TOPICS)} and come back to it after lunch.",
    lambda r: f"{r.choice(NAMES)}, could you take the minutes for {r.choice(TOPICS)}?",
    lambda r: (
        f"Our main risk is that {r.choice(TEAMS)} is blocked on the {r.choice(DELIVERABLES)}."
    ),
)

# ----------------------------------------------------------------------------- car

STREETS = ("Maple Avenue", "Station Road", "Harbour Street", "Elm Drive", "King's Way",
           "Mill Lane", "Bridge Street", "Oak Boulevard", "Church Road",
           "Park Crescent")  # fmt: skip
DESTINATIONS = ("the nearest petrol station", "the airport", "home", "work",
                "the closest charging point", "the hospital", "the shopping centre",
                "the ferry terminal", "a car park near the stadium")  # fmt: skip
CONTACTS = ("mum", "dad", "the office", "Grandma", "Oliver", "Sophie", "Raj", "Bianca",
            "Stefan", "Nadia")  # fmt: skip
TURNS = ("turn left", "turn right", "keep left", "keep right", "take the second exit",
         "take the first exit", "make a U-turn")  # fmt: skip
MEDIA = ("the radio", "the next track", "my driving playlist", "the news", "the podcast")

CAR: tuple[Template, ...] = (
    lambda r: f"Navigate to {r.choice(DESTINATIONS)}.",
    lambda r: f"Call {r.choice(CONTACTS)} on speaker.",
    lambda r: f"Set the temperature to {number_words(r.randrange(16, 28))} degrees.",
    lambda r: (
        f"In {number_words(r.randrange(1, 9) * 100)} metres, {r.choice(TURNS)} onto "
        f"{r.choice(STREETS)}."
    ),
    lambda r: (
        f"Play {r.choice(MEDIA)} and turn the volume up to {number_words(r.randrange(3, 30))}."
    ),
    lambda r: (
        f"Send a message to {r.choice(CONTACTS)}: I am stuck in traffic on {r.choice(STREETS)}."
    ),
    lambda r: (
        f"Your battery is at {number_words(r.randrange(5, 95))} percent, "
        f"about {number_words(r.randrange(20, 300))} kilometres of range."
    ),
    lambda r: f"Avoid motorways and find a route to {r.choice(DESTINATIONS)}.",
    lambda r: (
        f"Turn on the {r.choice(('seat heating', 'defroster', 'fog lights', 'cruise control'))}."
    ),
    lambda r: (
        f"You will arrive at {r.choice(DESTINATIONS)} in {number_words(r.randrange(4, 59))} "
        "minutes."
    ),
    lambda r: f"Read my last message from {r.choice(CONTACTS)}.",
    lambda r: (
        f"Traffic ahead on {r.choice(STREETS)}, a faster route saves "
        f"{number_words(r.randrange(2, 20))} minutes."
    ),
    lambda r: f"Open the sunroof and switch to {r.choice(MEDIA)}.",
)

# ----------------------------------------------------------------------------- voip

APPS = ("the video call", "the shared drive", "the calendar app", "the chat window",
        "the remote desktop", "the team wiki", "the ticketing system",
        "the password manager")  # fmt: skip
COLLEAGUES = ("Jonas", "Leila", "Tariq", "Maren", "Pavel", "Imogen", "Haruto", "Beatriz")
SYMPTOMS = ("keeps freezing", "is breaking up", "will not load", "logs me out",
            "shows a blank screen", "is very slow today", "crashed again")  # fmt: skip
FIXES = ("restart your router", "clear the browser cache", "reinstall the client",
         "switch off the camera", "plug in the headset again", "update the drivers",
         "turn the wifi off and on")  # fmt: skip

VOIP: tuple[Template, ...] = (
    lambda r: (
        "Sorry, you are breaking up, can you repeat the last "
        f"{r.choice(('part', 'sentence', 'number'))}?"
    ),
    lambda r: f"{_cap(r.choice(APPS))} {r.choice(SYMPTOMS)} since this morning.",
    lambda r: f"Could you try to {r.choice(FIXES)} and join again?",
    lambda r: "Can everyone see my screen, or is it still loading?",
    lambda r: f"{r.choice(COLLEAGUES)}, you are on mute, we cannot hear you.",
    lambda r: f"My upload speed is only {number_words(r.randrange(1, 20))} megabits per second.",
    lambda r: f"I will share the link to {r.choice(APPS)} in the chat.",
    lambda r: (
        f"The meeting code is {digits_words(r, 3)} {digits_words(r, 3)} {digits_words(r, 3)}."
    ),
    lambda r: (
        f"Let's dial back in at {number_words(r.randrange(1, 12))} "
        f"{r.choice(('thirty', 'fifteen', 'forty five', 'o clock'))}."
    ),
    lambda r: f"After I {r.choice(FIXES)}, {r.choice(APPS)} {r.choice(SYMPTOMS)}.",
    lambda r: f"There is an echo, {r.choice(COLLEAGUES)}, could you use headphones?",
    lambda r: f"The connection dropped for {number_words(r.randrange(2, 60))} seconds.",
    lambda r: "I am working from the cafe, so the bandwidth is terrible.",
)

# ----------------------------------------------------------------------------- radio

UNITS = ("unit", "truck", "patrol", "rescue", "engine", "crane")
LOCATIONS = ("the north gate", "dock four", "warehouse seven", "the east yard", "checkpoint bravo",
             "the loading bay", "pier twelve", "the fuel depot", "sector nine")  # fmt: skip
CARGO = ("containers", "pallets", "crates", "tankers", "trailers")
PHONETIC = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
            "kilo", "lima", "romeo", "sierra", "tango", "victor", "zulu")  # fmt: skip

RADIO: tuple[Template, ...] = (
    lambda r: (
        f"{_cap(r.choice(UNITS))} {number_words(r.randrange(1, 40))}, proceed to "
        f"{r.choice(LOCATIONS)}, over."
    ),
    lambda r: f"Copy that, estimated arrival {number_words(r.randrange(2, 30))} minutes, over.",
    lambda r: (
        f"Dispatch, {r.choice(UNITS)} {number_words(r.randrange(1, 40))} requesting backup "
        f"at {r.choice(LOCATIONS)}."
    ),
    lambda r: (
        f"We have {number_words(r.randrange(2, 60))} {r.choice(CARGO)} waiting at "
        f"{r.choice(LOCATIONS)}, over."
    ),
    lambda r: f"Negative, {r.choice(LOCATIONS)} is closed, reroute via {r.choice(LOCATIONS)}.",
    lambda r: "Say again, signal is weak, over.",
    lambda r: (
        f"Call sign {r.choice(PHONETIC)} {r.choice(PHONETIC)} {digits_words(r, 2)}, radio check."
    ),
    lambda r: f"Roger, holding position at {r.choice(LOCATIONS)}, out.",
    lambda r: (
        f"All units, wind is {number_words(r.randrange(10, 60))} knots, stop crane operations."
    ),
    lambda r: (
        f"{_cap(r.choice(UNITS))} {number_words(r.randrange(1, 40))}, switch to channel "
        f"{number_words(r.randrange(1, 16))}, over."
    ),
    lambda r: (
        f"Load {r.choice(PHONETIC)} {digits_words(r, 3)} is cleared for departure from "
        f"{r.choice(LOCATIONS)}."
    ),
    lambda r: f"Be advised, a vehicle is blocking {r.choice(LOCATIONS)}, over.",
)

# ----------------------------------------------------------------------------- clinic (held out)

DRUGS = ("paracetamol", "amoxicillin", "ibuprofen", "metformin", "furosemide", "heparin",
         "prednisolone", "omeprazole", "salbutamol")  # fmt: skip
SYMPTOMS_CLINIC = ("mild chest pain", "shortness of breath", "a persistent cough",
                   "abdominal tenderness", "ankle swelling", "dizziness on standing",
                   "a low grade fever", "nausea overnight")  # fmt: skip
FINDINGS = ("clear lung fields", "a soft abdomen", "normal heart sounds", "good capillary refill",
            "reduced air entry on the left", "a healing surgical wound")  # fmt: skip
TESTS = ("a chest X-ray", "full blood count", "an ECG", "renal function", "a urine culture",
         "an ultrasound of the abdomen")  # fmt: skip
DOSES = ("milligrams twice daily", "milligrams once daily", "milligrams at night",
         "micrograms as required")  # fmt: skip

CLINIC: tuple[Template, ...] = (
    lambda r: (
        f"Patient in bed {number_words(r.randrange(1, 30))} reports {r.choice(SYMPTOMS_CLINIC)}."
    ),
    lambda r: f"Start {r.choice(DRUGS)} {number_words(r.randrange(1, 10) * 50)} {r.choice(DOSES)}.",
    lambda r: f"On examination, {r.choice(FINDINGS)} and {r.choice(FINDINGS)}.",
    lambda r: f"Please request {r.choice(TESTS)} and review the results tomorrow.",
    lambda r: (
        f"Blood pressure {number_words(r.randrange(95, 170))} over "
        f"{number_words(r.randrange(55, 100))}, pulse {number_words(r.randrange(50, 120))}."
    ),
    lambda r: f"Stop the {r.choice(DRUGS)} because of {r.choice(SYMPTOMS_CLINIC)}.",
    lambda r: (
        f"Temperature {number_words(r.randrange(36, 40))} point {number_words(r.randrange(0, 10))}"
        f" degrees, oxygen saturation {number_words(r.randrange(88, 100))} percent."
    ),
    lambda r: f"The ward round found {r.choice(FINDINGS)}; continue {r.choice(DRUGS)}.",
    lambda r: f"Discharge planned for {r.choice(DAYS)} if {r.choice(TESTS)} is normal.",
    lambda r: (
        f"History of {r.choice(SYMPTOMS_CLINIC)} for {number_words(r.randrange(2, 15))} days."
    ),
    lambda r: f"Refer to the {r.choice(('cardiology', 'respiratory', 'renal', 'surgical'))} team.",
    lambda r: f"{r.choice(NAMES)} from the family was informed of the plan.",
)

TEMPLATES: dict[str, tuple[Template, ...]] = {
    "meeting": MEETING,
    "car": CAR,
    "voip": VOIP,
    "radio": RADIO,
    "clinic": CLINIC,
}


def scenario_sentences(scenario: str, count: int, seed: int) -> list[str]:
    """``count`` distinct target-domain sentences of ``scenario``, drawn from ``seed``."""
    if scenario not in TEMPLATES:
        raise ValueError(f"scenario: unknown {scenario!r}; known: {sorted(TEMPLATES)}")
    return generate(TEMPLATES[scenario], count, seed)
