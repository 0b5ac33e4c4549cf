"""`augserve compress | transfer`: argument wiring and a local run."""

import json

from augserve.server.cli import build_parser, main
from augserve.server.jobs.cli import build_spec
from augserve.server.jobs.specs import Distill, Finetune, Prune, Quantize, Transfer


def _spec(*argv):
    return build_spec(build_parser().parse_args(list(argv)))


def test_commands_build_the_matching_steps():
    base = ["--repository", "/r", "--name", "out", "--source", "m"]
    spec = _spec("compress", "prune", *base, "--then-distill", "--then-quantize")
    assert [type(s) for s in spec.steps] == [Prune, Distill, Quantize]
    assert spec.steps[1].student_width == 0 and spec.source.name == "m"
    spec = _spec("compress", "quantize", *base, "--finetune-epochs", "2", "--method", "dynamic")
    assert [type(s) for s in spec.steps] == [Finetune, Quantize]
    spec = _spec("transfer", "run", *base, "--method", "full_finetune", "--dataset",
                 "digits_5_9_few")
    assert isinstance(spec.steps[0], Transfer) and spec.steps[0].method == "full_finetune"


def test_local_train_then_missing_source(tmp_path, capsys):
    out = tmp_path / "result.json"
    argv = ["compress", "train", "--repository", str(tmp_path), "--name", "tiny", "--epochs",
            "1", "--architecture-kwargs", '{"width": 2}', "--no-latency", "--local",
            "--json", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["version"] == 1
    assert (tmp_path / "tiny" / "1" / "model_card.json").is_file()
    argv = ["compress", "prune", "--repository", str(tmp_path), "--name", "x", "--source",
            "nope", "--local"]
    assert main(argv) == 2
    assert "NotFound: source model 'nope'" in capsys.readouterr().out
