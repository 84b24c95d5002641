"""Quality report and clean-up on planted cases: duplicates, near-duplicates, empty and
over-long rows, languages, and each kind of personal data (with look-alikes that must pass)."""

import json

import pytest

from app.core.errors import InvalidInput, NotFound
from app.data import datasets, pii, quality

LONG = ("The committee met on Tuesday to review the budget for the coming year, and after a long "
        "discussion it agreed to fund the new library wing and the repairs to the old town bridge.")
NEAR = LONG.replace("Tuesday", "Thursday")
GERMAN = ("Der Ausschuss hat sich am Dienstag getroffen, um über den Haushalt für das kommende "
          "Jahr zu sprechen.")


@pytest.mark.parametrize("text, kind, found", [
    ("write to ann.lee@example.co.uk today", "email", "ann.lee@example.co.uk"),
    ("call (415) 555-2671 after five", "phone", "(415) 555-2671"),
    ("or +44 20 7946 0958 in London", "phone", "+44 20 7946 0958"),
    ("card 4111 1111 1111 1111 expires soon", "credit_card", "4111 1111 1111 1111"),
    ("card 5500-0000-0000-0004 too", "credit_card", "5500-0000-0000-0004"),
    ("pay to GB82 WEST 1234 5698 7654 32 please", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("pay to DE89370400440532013000 please", "iban", "DE89370400440532013000"),
    ("from 192.168.1.20 yesterday", "ip_address", "192.168.1.20"),
    ("from 2001:db8::1 yesterday", "ip_address", "2001:db8::1"),
    ("ssn 123-45-6789 on file", "us_ssn", "123-45-6789"),
    ("NI number AB 12 34 56 C on file", "uk_nino", "AB 12 34 56 C"),
])
def test_each_kind_of_personal_data_is_found(text, kind, found):
    hits = pii.find_pii(text)
    assert [(h.kind, h.text) for h in hits] == [(kind, found)]
    assert found not in pii.redact(text) and f"[{kind.upper()}]" in pii.redact(text)


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails the Luhn check",
    "bad IBAN GB82 WEST 1234 5698 7654 33 fails mod 97",
    "not an address 999.1.1.1 nor a time 12:30:45",
    "ssn-like 000-12-3456 and 666-12-3456 are never issued",
    "an order number 1234567890123 and version 1.2.3",
    "NI-like QQ 12 34 56 C has a prefix never issued",
])
def test_look_alikes_are_not_flagged(text):
    assert pii.find_pii(text) == []


def test_luhn_and_iban_checksums():
    assert pii.luhn_ok("79927398713") and not pii.luhn_ok("79927398710")
    assert pii.iban_ok("GB82 WEST 1234 5698 7654 32") and not pii.iban_ok("GB82 WEST 1234 5698 7654 31")


def planted(wb, tmp_path):
    rows = [
        {"text": LONG},
        {"text": "  " + LONG.upper() + "  "},  # the same once case and spaces are ignored
        {"text": NEAR},
        {"text": "..."},
        {"text": "Reach me at bob@example.org or 4111 1111 1111 1111."},
        {"text": GERMAN},
        {"text": "A short and entirely different line about cooking pasta with garlic."},
        {"text": "word " * 300},
    ]
    src = tmp_path / "planted.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return datasets.register_file(wb, src, "planted", "cpt")


def test_report_counts_and_examples(wb, starter, tmp_path):
    ds = planted(wb, tmp_path)
    r = quality.quality_report(wb, ds.id, model_id=starter.id, max_tokens=200)
    assert r["rows"] == 8
    assert r["exact_duplicates"]["count"] == 1 and r["exact_duplicates"]["examples"][0]["row"] == 2
    assert r["exact_duplicates"]["examples"][0]["same_as"] == 1
    near = r["near_duplicates"]
    assert near["count"] == 1 and (near["examples"][0]["row"], near["examples"][0]["like"]) == (3, 1)
    assert r["empty"] == {"count": 1, "examples": [{"row": 4, "text": "..."}]}
    assert r["over_long"]["count"] == 1 and r["over_long"]["examples"][0]["row"] == 8
    assert r["over_long"]["examples"][0]["tokens"] > 200 and r["tokens"]["max"] > 200
    assert r["pii"]["email"]["rows"] == 1 and r["pii"]["email"]["examples"][0]["match"] == "bob@example.org"
    assert r["pii"]["credit_card"]["matches"] == 1 and r["pii"]["phone"]["matches"] == 0
    assert r["pii_rows"] == 1
    assert r["languages"]["en"] >= 4 and r["languages"].get("de") == 1
    # Without a model there are no token counts, and the rest stays the same.
    plain = quality.quality_report(wb, ds.id)
    assert plain["tokens"] is None and plain["over_long"] is None
    assert plain["near_duplicates"] == near


def test_cleaning_writes_a_new_version_with_a_parent_link(wb, starter, tmp_path):
    ds = planted(wb, tmp_path)
    before = open(ds.path).read()
    clean = quality.clean_dataset(wb, ds.id, model_id=starter.id, max_tokens=200)
    assert clean.id != ds.id and clean.name == "planted-clean" and clean.source == "cleaned"
    assert clean.meta["parent_id"] == ds.id and clean.kind == ds.kind and clean.format == "text"
    counts = clean.meta["cleaned"]
    assert (counts["exact_duplicates"], counts["near_duplicates"], counts["empty"], counts["over_long"],
            counts["pii_redacted_rows"]) == (1, 1, 1, 1, 1)
    texts = [json.loads(x)["text"] for x in open(clean.path)]
    assert texts == [LONG, "Reach me at [EMAIL] or [CREDIT_CARD].", GERMAN,
                     "A short and entirely different line about cooking pasta with garlic."]
    # The original is untouched, file and row.
    assert open(ds.path).read() == before and datasets.get_dataset(wb, ds.id).num_rows == 8
    # Dropping personal data instead, keeping near-duplicates; the next free name.
    again = quality.clean_dataset(wb, ds.id, pii_action="drop", dedup_near=False)
    assert again.name == "planted-clean-2" and again.meta["cleaned"]["pii"] == 1
    assert [json.loads(x)["text"] for x in open(again.path)][:2] == [LONG, NEAR]


def test_cleaning_refuses_bad_options_and_missing_ids(wb, tmp_path):
    ds = planted(wb, tmp_path)
    with pytest.raises(NotFound):
        quality.clean_dataset(wb, 999)
    with pytest.raises(NotFound):
        quality.quality_report(wb, ds.id, model_id=999)
    with pytest.raises(InvalidInput, match="pii_action"):
        quality.clean_dataset(wb, ds.id, pii_action="shred")
    with pytest.raises(InvalidInput, match="threshold"):
        quality.quality_report(wb, ds.id, threshold=1.5)
    with pytest.raises(InvalidInput, match="name"):
        quality.clean_dataset(wb, ds.id, name="../x")
    assert [d.name for d in datasets.list_datasets(wb)] == ["planted"]


def test_report_reads_every_format(wb, tmp_path):
    src = tmp_path / "p.jsonl"
    row = {"prompt": "Mail carol@example.com?", "chosen": "Yes", "rejected": "No"}
    src.write_text(json.dumps(row) + "\n" + json.dumps(dict(row, chosen="Sure")) + "\n")
    ds = datasets.register_file(wb, src, "prefs", "dpo")
    r = quality.quality_report(wb, ds.id)
    assert r["pii"]["email"]["rows"] == 2
    clean = quality.clean_dataset(wb, ds.id, dedup_near=False)
    stored = [json.loads(x) for x in open(clean.path)]
    assert stored[0]["messages"][0] == {"role": "user", "content": "Mail [EMAIL]?"}
    assert stored[0]["chosen"]["role"] == "assistant"


def test_rest_routes_report_clean_and_import(starter_server, tmp_path):
    from fastapi.testclient import TestClient

    server, wb, base = starter_server
    ds = planted(wb, tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("A document for the corpus.")
    with TestClient(server) as client:
        r = client.get(f"/api/datasets/{ds.id}/quality", params={"model_id": base.id, "max_tokens": 200})
        assert r.status_code == 200 and r.json()["over_long"]["count"] == 1
        assert r.json()["pii"]["credit_card"]["matches"] == 1
        r = client.post(f"/api/datasets/{ds.id}/clean", json={"pii_action": "drop", "name": "tidy"})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "tidy" and r.json()["meta"]["parent_id"] == ds.id
        assert r.json()["num_rows"] == 4  # 8 less a duplicate, a near one, an empty row and the PII row
        r = client.post(f"/api/datasets/{ds.id}/clean", json={"pii_action": "shred"})
        assert r.status_code == 422 and "pii_action" in r.json()["error"]["message"]
        corpus_body = {"paths": [str(tmp_path / "docs")], "model_id": base.id, "chunk_tokens": 16,
                       "overlap": 4}
        r = client.post("/api/corpus", json={**corpus_body, "preview": True})
        assert r.status_code == 200 and r.json()["chunks"] == 1 and r.json()["tokens"] > 3
        assert client.post("/api/corpus", json=corpus_body).json()["error"]["code"] == "invalid_input"
        r = client.post("/api/corpus", json={**corpus_body, "name": "docs"})
        assert r.status_code == 201 and (r.json()["kind"], r.json()["num_rows"]) == ("cpt", 1)
        missing = {**corpus_body, "paths": [str(tmp_path / "nope.txt")], "name": "x"}
        r = client.post("/api/corpus", json=missing)
        assert r.status_code == 422 and str(tmp_path) not in r.text


def test_data_tab_endpoints_import_a_corpus(wb, starter, tmp_path):
    import gradio as gr

    from tests.test_bad_files import data_tab_fns

    fns, _ = data_tab_fns(wb)
    assert {"preview_corpus", "import_corpus"} <= set(fns)  # the report and clean-up: test_quality_jobs
    doc = tmp_path / "doc.md"
    doc.write_text("# A heading\n\nSome words for the corpus.")
    status, preview = fns["preview_corpus"]([str(doc)], "", starter.id, 512, 64)
    assert status.startswith("**1 chunk, ") and preview["value"][0]["text"].startswith("# A heading")
    with pytest.raises(gr.Error, match="name the dataset"):
        fns["import_corpus"]([str(doc)], "", starter.id, 512, 64, " ")
    with pytest.raises(gr.Error, match="overlap"):
        fns["import_corpus"]([str(doc)], "", starter.id, 8, 8, "notes")
    message, _ = fns["import_corpus"]([str(doc)], "", starter.id, 512, 64, "notes")
    assert message.startswith("Imported **notes**: 1 chunk, ")
