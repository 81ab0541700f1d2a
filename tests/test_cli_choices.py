"""Closed CLI option sets are checked by typer before any file is read."""

from __future__ import annotations

from typer.testing import CliRunner

from kbfm.cli import app
from kbfm.cli._choices import GeneSelection, Preset, StainNorm

runner = CliRunner()


def flat(output: str) -> str:
    """The output without rich's box characters and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_a_bad_choice_exits_2_naming_the_choices_before_reading_the_file(tmp_path):
    missing = tmp_path / "nothing.h5ad"  # never read: the option is refused first
    run = runner.invoke(
        app, ["train", str(missing), "--model-dir", str(tmp_path / "m"), "--preset", "huge"]
    )
    assert run.exit_code == 2
    assert "'huge' is not one of 'tiny', 'base', 'large'" in flat(run.output)
    assert "nothing.h5ad" not in run.output
    run = runner.invoke(app, ["embed-image", str(missing), "--stain-norm", "macenko"])
    assert run.exit_code == 2 and "'macenko' is not one of 'reinhard'" in flat(run.output)


def test_cli_choices_match_what_the_library_accepts():
    from kbfm.models._setup import GENE_SELECTIONS
    from kbfm.models.fusion import PRESETS

    assert [p.value for p in Preset] == list(PRESETS)
    assert [g.value for g in GeneSelection] == list(GENE_SELECTIONS)
    assert [s.value for s in StainNorm] == ["reinhard"]  # tl.embed_image's only method
