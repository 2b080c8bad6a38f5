#!/usr/bin/env python3
"""Checks a FHIR R4 Bundle of Observations (on stdin) with an independent implementation.

Used by tests/tests/health.rs: the gateway's FHIR export is parsed here by the `fhir.resources`
models (PyPI; their R4B module: FHIR 4.3, whose Observation and Bundle are R4's with only
additive changes), never by our own types. Every Observation must parse, carry a LOINC code we
expect for what it measures, UCUM units, and blood pressure must be a panel with systolic and
diastolic components. Prints a JSON summary on stdout; exits 1 with the reasons on stderr.

    python tests/fhir_check.py < bundle.json
"""

import json
import sys

try:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.observation import Observation
except ImportError as e:  # pragma: no cover - set-up problem, said clearly
    print(f"fhir.resources is not installed ({e}); tests/run creates target/fhir-venv", file=sys.stderr)
    sys.exit(2)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# LOINC code of the observation -> UCUM unit of its value (None: a panel with components).
EXPECTED = {
    "85354-9": None,  # blood pressure panel
    "14743-9": "mmol/L",  # capillary glucose by glucometer
    "59408-5": "%",  # SpO2 by pulse oximetry
    "8310-5": "Cel",  # body temperature
    "29463-7": "kg",  # body weight
    "8867-4": "/min",  # heart rate
}
COMPONENTS = {"8480-6": "mm[Hg]", "8462-4": "mm[Hg]"}


def check_quantity(q, unit, where, problems):
    if q is None:
        problems.append(f"{where}: no valueQuantity")
        return None
    if q.system != UCUM or q.code != unit:
        problems.append(f"{where}: unit {q.system} {q.code}, expected UCUM {unit}")
    if q.value is None:
        problems.append(f"{where}: no value")
    return str(q.value)


def main():
    raw = json.load(sys.stdin)
    problems = []
    bundle = Bundle.model_validate(raw)
    if bundle.type != "collection":
        problems.append(f"bundle type {bundle.type}")
    out = []
    for i, entry in enumerate(bundle.entry or []):
        where = f"entry {i}"
        # Parse each resource on its own too, by the Observation model.
        obs = Observation.model_validate(raw["entry"][i]["resource"])
        codes = [c.code for c in obs.code.coding if c.system == LOINC]
        known = [c for c in codes if c in EXPECTED]
        if len(known) != 1:
            problems.append(f"{where}: LOINC codes {codes}, expected one of {sorted(EXPECTED)}")
            continue
        code = known[0]
        subject = obs.subject.identifier if obs.subject else None
        if subject is None or not subject.system or not subject.value:
            problems.append(f"{where}: subject without an identifier system and value")
        cats = [c.code for cat in (obs.category or []) for c in cat.coding]
        item = {"code": code, "status": obs.status, "categories": cats,
                "subject": subject.value if subject else None}
        if EXPECTED[code] is None:
            comps = {}
            for comp in obs.component or []:
                ccodes = [c.code for c in comp.code.coding if c.system == LOINC]
                for c in ccodes:
                    if c in COMPONENTS:
                        comps[c] = check_quantity(comp.valueQuantity, COMPONENTS[c], f"{where} component {c}", problems)
            if set(comps) != set(COMPONENTS):
                problems.append(f"{where}: blood pressure components {sorted(comps)}, expected {sorted(COMPONENTS)}")
            if "vital-signs" not in cats:
                problems.append(f"{where}: blood pressure not in category vital-signs")
            item["systolic"] = comps.get("8480-6")
            item["diastolic"] = comps.get("8462-4")
        else:
            item["value"] = check_quantity(obs.valueQuantity, EXPECTED[code], where, problems)
            item["unit"] = obs.valueQuantity.code if obs.valueQuantity else None
        if obs.interpretation:
            item["interpretation"] = [c.code for i in obs.interpretation for c in i.coding]
        out.append(item)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"observations": out}))


if __name__ == "__main__":
    main()
