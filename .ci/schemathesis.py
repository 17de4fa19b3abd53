"""Sets up a provider and its patients on a running MedPay and writes the schemathesis
configuration that binds generated payment bodies to them (ids cannot be generated from a schema).
usage: schemathesis.py BASE_URL ADMIN_TOKEN OUT_DIR   -> prints the provider's key"""
import json
import random
import sys
import urllib.request

base, admin, out = sys.argv[1], sys.argv[2], sys.argv[3]


def post(path, token, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def check_digits(digits, weights_from):
    out = digits
    for start in weights_from:
        total = sum(int(d) * w for d, w in zip(out, range(start, 1, -1)))
        rest = total % 11
        out += "0" if rest < 2 else str(11 - rest)
    return out


def cnpj_digits(base12):
    weights = [[5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]]
    out = base12
    for w in weights:
        rest = sum(int(d) * k for d, k in zip(out, w)) % 11
        out += "0" if rest < 2 else str(11 - rest)
    return out


rng = random.Random()
provider = post(
    "/v1/providers",
    admin,
    {"name": "Clínica Schemathesis", "cnpj": cnpj_digits(f"{rng.randrange(10**7, 10**8)}0001"), "fee_bps": 500,
     "escrow": False, "score_fail_mode": "open"},
)
patients = []
for n in range(20):
    cpf = check_digits(f"{rng.randrange(10**8, 10**9)}", [10, 11])
    patient = post(
        "/v1/patients",
        provider["api_key"],
        {"name": f"Paciente {n}", "cpf": cpf, "email": f"paciente{n}@example.com", "phone": "+55 11 99999-0000"},
    )
    patients.append(patient["id"])

with open(f"{out}/schemathesis.toml", "w") as config:
    config.write("# Written by .ci/schemathesis.py: generated payments name real parties.\n")
    config.write(f"[dictionaries.patients]\nvalues = {json.dumps(patients)}\n\n")
    config.write(f"[dictionaries.providers]\nvalues = {json.dumps([provider['id']])}\n\n")
    config.write('[parameters]\n"body.patient_id" = { dictionary = "patients" }\n')
    config.write('"body.provider_id" = { dictionary = "providers" }\n')
print(provider["api_key"])
