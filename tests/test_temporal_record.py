"""The temporal record's schema: the key constants and the TypedDicts name the same fields."""

from dvis_attn_pl.utils import temporal_record as tr


def test_constants_and_typed_dict_agree():
    constants = {name: getattr(tr, name) for name in tr.__all__ if name.isupper()}
    record = {v for k, v in constants.items() if not k.startswith("DELETION_")}
    deletion = {v for k, v in constants.items() if k.startswith("DELETION_")}
    assert record == set(tr.TemporalRecord.__annotations__)
    curves = set(tr.DeletionCurvesRecord.__annotations__)
    assert deletion == set(tr.DeletionRecord.__annotations__) | curves
    assert curves <= deletion and tr.DELETION_ROLLOUT in tr.DeletionRecord.__annotations__


def test_trace_is_returned_not_left_on_the_model():
    from dvis_attn_pl.model.meta_arch import DVISDAQOnline
    from dvis_attn_pl.model.meta_arch_offline import DVISDAQOffline, OfflineInferenceTrace

    assert hasattr(DVISDAQOnline, "run_with_trace") and issubclass(DVISDAQOffline, DVISDAQOnline)
    assert "refiner_inputs" in OfflineInferenceTrace.__dataclass_fields__
