"""Reference metrics through the real ``llamafactory-cli``: the starter's eval loss and
perplexity, and BLEU-4/ROUGE of its greedy answers, on the shipped SFT sample; what is
refused; a failed measurement stores no numbers; REST and the Evaluate tab's endpoints."""

from __future__ import annotations

import math
import os

import pytest

from app.core.errors import InvalidInput, NotFound
from app.data import datasets
from app.evals import reference
from tests.conftest import ROOT


def sample(wb, name="sft"):
    return datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", name, "sft")


def test_what_reference_metrics_refuse(wb, starter, stub, served):
    ds = sample(wb)
    corpus = datasets.register_file(wb, ROOT / "data/samples/cpt_starter.jsonl", "corpus", "cpt")
    pairs = datasets.register_rows(wb, "pairs", "dpo", [
        {"messages": [{"role": "user", "content": "hi"}], "chosen": {"role": "assistant", "content": "hello"},
         "rejected": {"role": "assistant", "content": "go away"}}], fmt="preference")
    with pytest.raises(InvalidInput, match="metric must be one of"):
        reference.start_reference_eval(wb, starter.id, ds.id, "vibes")
    with pytest.raises(InvalidInput, match="take an SFT dataset"):
        reference.start_reference_eval(wb, starter.id, pairs.id)
    with pytest.raises(InvalidInput, match="BLEU/ROUGE compare generated answers"):
        reference.start_reference_eval(wb, starter.id, corpus.id, "generation")
    with pytest.raises(InvalidInput, match="served by ollama"):
        reference.start_reference_eval(wb, served[0].id, ds.id)
    with pytest.raises(InvalidInput, match="max samples"):
        reference.start_reference_eval(wb, starter.id, ds.id, max_samples=0)
    with pytest.raises(NotFound):
        reference.start_reference_eval(wb, starter.id, 999)
    assert reference.list_reference_evals(wb) == []  # nothing queued or stored
    cfg = reference.reference_config(wb, starter, corpus, "loss", 10, 16, wb.settings.jobs_dir / "x")
    got = (cfg["stage"], cfg["do_train"], cfg["do_eval"], cfg["eval_dataset"])
    assert got == ("pt", False, True, "corpus")


@pytest.mark.slow
def test_loss_perplexity_bleu_and_rouge_from_llamafactory(wb, starter):
    ds = sample(wb)
    loss = reference.start_reference_eval(wb, starter.id, ds.id, "loss", max_samples=16)
    gen = reference.start_reference_eval(wb, starter.id, ds.id, "generation", max_samples=8,
                                         max_new_tokens=16)
    for row in (loss, gen):
        job = wb.jobs.wait(row.job_id, 300)
        assert job.status == "succeeded", job.error
    m = reference.get_reference_eval(wb, loss.id).metrics
    assert 0 < m["loss"] < 20 and math.isclose(m["perplexity"], math.exp(m["loss"]), rel_tol=1e-9)
    g = reference.get_reference_eval(wb, gen.id).metrics
    assert {"bleu-4", "rouge-1", "rouge-2", "rouge-l"} <= set(g)
    assert all(0 <= g[k] <= 100 for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")) and g["rouge-1"] > 0
    view = reference.reference_json(wb, reference.get_reference_eval(wb, gen.id))
    assert (view["model"], view["dataset"], view["status"]) == ("starter", "sft", "succeeded")
    assert [r.id for r in reference.list_reference_evals(wb, starter.id)] == [gen.id, loss.id]

    # A dataset whose file went missing: LLaMA-Factory fails, and no number is stored.
    gone = sample(wb, "gone")
    os.remove(gone.path)
    broken = reference.start_reference_eval(wb, starter.id, gone.id, "loss", max_samples=4)
    assert wb.jobs.wait(broken.job_id, 300).status == "failed"
    assert reference.get_reference_eval(wb, broken.id).metrics == {}


def test_reference_metrics_through_rest_and_the_evaluate_tab(tmp_path, starter_dir):
    from fastapi.testclient import TestClient
    from gradio_client import Client

    import launch
    from app.core.settings import Settings
    from app.models import registry
    from tests.conftest import ServerThread, make_workbench

    home = tmp_path / "home"
    setup = make_workbench(home)
    base = registry.register_base_model(setup, "starter", str(starter_dir))
    ds = sample(setup)
    setup.close()
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        with TestClient(server) as c, ServerThread(server) as srv:
            bad = c.post("/api/evals/reference", json={"model_id": base.id, "dataset_id": ds.id,
                                                       "metric": "x"})
            assert bad.status_code == 422 and "metric must be one of" in bad.json()["error"]["message"]
            assert c.get("/api/evals/reference/999").status_code == 404
            assert c.get("/api/evals/reference").json() == []
            client = Client(srv.url, verbose=False)
            table = client.predict(api_name="/reference_results")
            assert table["headers"][:4] == ["id", "model", "dataset", "metric"]
            assert table["data"] in ([], [[None] * 12])
            with pytest.raises(Exception, match="choose a version and a dataset"):
                client.predict(None, ds.id, "loss", 8, 16, api_name="/reference_eval")
    finally:
        wb.close()
