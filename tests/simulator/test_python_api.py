"""The simulator's Python API, without HTTP: generated data, mutations and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.simulator import (
    SETTINGS_FIELDS,
    DuplicateError,
    Pbx,
    Simulator,
    generate_filenames,
    generate_settings,
)


def test_generated_data_is_deterministic_unique_and_plausible() -> None:
    names = generate_filenames(500, seed=7)
    assert names == generate_filenames(500, seed=7)
    assert names != generate_filenames(500, seed=8)
    assert len(set(names)) == 500
    assert {Path(name).suffix for name in names} == {".sh", ".ps1", ".py"}
    assert names[0].endswith((".sh", ".ps1", ".py"))
    assert names[0].split("-")[-1].startswith("0001")
    assert generate_settings(names, 7) == generate_settings(names, 7)

    pbx = Pbx("x", scripts=500, seed=7)
    assert pbx.filenames == sorted(names)
    settings = pbx.settings
    assert set(settings) == set(SETTINGS_FIELDS)
    assert settings["PreStartScript"] in pbx
    assert settings["PostStartScript"] in pbx
    assert settings["Condition"] in ("AllService", "AnyService")
    assert settings["Mode"] in ("Active", "Passive")
    assert Pbx("y", scripts=500, seed=7).items() == pbx.items()


def test_empty_and_explicit_listings() -> None:
    empty = Pbx("e", scripts=0)
    assert len(empty) == 0
    assert empty.settings["PreStartScript"] is None
    explicit = Pbx("x", scripts=["b.sh", "a.ps1"], states=True)
    assert explicit.items() == [
        {"Filename": "a.ps1", "State": "Connected"},
        {"Filename": "b.sh", "State": "Connected"},
    ]
    with pytest.raises(DuplicateError):
        Pbx("d", scripts=["a.sh", "a.sh"])
    with pytest.raises(ValueError, match="filename"):
        Pbx("d", scripts=["dir/a.sh"])


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 300), seed=st.integers(0, 2**32))
def test_generated_names_are_unique_for_any_seed(count: int, seed: int) -> None:
    names = generate_filenames(count, seed)
    assert len(names) == count == len(set(names))
    pbx = Pbx("p", scripts=count, seed=seed)
    for name in (pbx.settings["PreStartScript"], pbx.settings["PostStartScript"]):
        assert (name is None) == (count == 0)
        assert name is None or name in pbx


def test_python_api_mutations_and_refusals() -> None:
    pbx = Pbx("hq", scripts=["b.sh", "d.sh"])
    pbx.add_script("c.sh", state="Disconnected")
    assert pbx.filenames == ["b.sh", "c.sh", "d.sh"]
    assert pbx.item("c.sh") == {"Filename": "c.sh", "State": "Disconnected"}
    pbx.rename_script("c.sh", "a.sh")
    assert pbx.items()[0] == {"Filename": "a.sh", "State": "Disconnected"}
    pbx.set_state("a.sh", None)
    pbx.remove_script("d.sh")
    assert pbx.items() == [{"Filename": "a.sh"}, {"Filename": "b.sh"}]
    with pytest.raises(DuplicateError):
        pbx.add_script("a.sh")
    with pytest.raises(KeyError):
        pbx.remove_script("zzz.sh")
    with pytest.raises(DuplicateError):
        pbx.rename_script("a.sh", "b.sh")
    pbx.update_settings(Mode="Passive", PreStartScript="gone.sh")
    assert pbx.settings["Mode"] == "Passive"
    with pytest.raises(ValueError, match="unknown settings field"):
        pbx.update_settings(Colour="blue")
    with pytest.raises(ValueError, match="Mode"):
        pbx.update_settings(Mode="Sideways")
    with pytest.raises(ValueError, match="Interval"):
        pbx.update_settings(Interval="60")
    for bad in ("xapi", "connect", "_sim", "a/b", "-x"):
        with pytest.raises(ValueError, match="invalid PBX name"):
            Pbx(bad)
    sim = Simulator([pbx])
    with pytest.raises(DuplicateError):
        sim.create("hq")
    fleet = Simulator.fleet(3, scripts=4, states=True)
    assert fleet.names == ["pbx-0001", "pbx-0002", "pbx-0003"]
    assert fleet["pbx-0001"].filenames != fleet["pbx-0002"].filenames
