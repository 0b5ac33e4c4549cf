"""The report's table, JSON and PNG from a result of the report's shape (no training)."""

import json

from augserve.server.jobs.report import COMPRESSION_MODELS, compression_table, write_outputs


def _card(name, accuracy, params):
    return {"model": name, "version": 1, "accuracy": {"after": accuracy},
            "params": {"after": params}, "macs": {"after": params * 10},
            "size_bytes": {"after": params * 4}, "int8_package_bytes": 0}


def _result():
    accuracy = dict(zip(COMPRESSION_MODELS, (0.99, 0.985, 0.99, 0.98, 0.975), strict=True))
    return {
        "models": {k: _card(k, a, 1000) for k, a in accuracy.items()},
        "latency_ms": {k: {"batch_1": 0.1, "batch_32": 1.0} for k in COMPRESSION_MODELS},
        "int8_top1_drop": 0.0, "pruned_top1_drop": 0.5, "pruned_int8_top1_drop": 1.0,
        "student_over_teacher_accuracy": 0.985, "student_over_teacher_macs": 0.2,
        "targets": {"int8_within_1_point": True, "student_quarter_flops": True},
    }


def test_table_lists_five_models_and_the_targets():
    table = compression_table(_result())
    for key in (*COMPRESSION_MODELS, "int8_top1_drop", "pruned_top1_drop",
                "student_over_teacher_accuracy", "met"):
        assert key in table


def test_writes_json_with_the_target_keys_and_a_png(tmp_path):
    write_outputs(_result(), tmp_path / "r.json", tmp_path / "r.png")
    saved = json.loads((tmp_path / "r.json").read_text())
    for key in ("int8_top1_drop", "pruned_top1_drop", "student_over_teacher_accuracy"):
        assert key in saved
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_report_runs_end_to_end_and_reloaded_versions_match_their_cards(tmp_path):
    from augserve.server.jobs.report import ReportSettings, compression_report

    settings = ReportSettings(width=4, epochs=2, prune_stages=1, prune_epochs=1,
                              student_width=2, distill_epochs=1, latency=False)
    result = compression_report(tmp_path, settings)
    assert list(result["models"]) == list(COMPRESSION_MODELS)
    for key, card in result["models"].items():
        assert result["reloaded_accuracy"][key] == card["accuracy"]["after"], key
    assert result["models"]["int8"]["int8_package_bytes"] > 0
    assert set(result["targets"]) == {"int8_within_1_point", "pruned_within_1_point",
                                      "student_97_percent_accuracy", "student_quarter_flops"}


def test_table_adds_the_resnet18_rows_and_the_case_specs_keep_the_default_gate(tmp_path):
    from augserve.server.jobs.resnet18_case import PHOTOS, CaseSettings, case_specs, write_crops
    from augserve.server.jobs.specs import JobSpec, Prune

    case = {"dataset": {"description": "folder crops", "input_shape": [3, 224, 224]},
            "top1": {"fp32": 0.9, "pruned_int8": 0.95},
            "params": {"before": 11_000_000, "after": 2_800_000},
            "macs": {"before": 1_800_000_000, "after": 470_000_000},
            "size_bytes": {"fp32": 44 << 20, "pruned_int8": 11 << 20},
            "latency_ms": {"fp32": {"batch_1": 30.0, "batch_32": 900.0},
                           "pruned_int8": {"batch_1": 8.0, "batch_32": 200.0}},
            "gate": {"max_accuracy_drop": 0.01, "measured_drop": -0.05, "passed": True}}
    table = compression_table({**_result(), "resnet18": case})
    assert "resnet18_fp32" in table and "resnet18_pruned_int8" in table
    assert "passed" in table
    assert "resnet18: accuracy gate missed" in compression_table(
        {**_result(), "resnet18": {"error": "accuracy gate missed: ..."}})
    train, small = (JobSpec.from_dict(s) for s in case_specs(str(tmp_path), "crops",
                                                             CaseSettings()))
    assert train.source.zoo == "resnet18" and train.steps[0].batch_size == 8
    assert train.steps[0].evaluate_every == train.steps[0].epochs  # the last epoch only
    assert small.max_accuracy_drop == 0.01 and isinstance(small.steps[0], Prune)
    assert small.steps[0].evaluate_every == small.steps[0].finetune_epochs
    write_crops(tmp_path / "crops", 2, photos=PHOTOS[:2], size=32)
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == sorted(PHOTOS[:2])
