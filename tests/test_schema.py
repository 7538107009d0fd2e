"""The schema is defined once (features_dict); what the writer and the card derive from it equals datasets' own."""

from __future__ import annotations

import pytest
from datasets import DatasetInfo, Features

from aclbuild.registry import get_base
from aclbuild.schema import arrow_schema, card_features, features, features_dict


@pytest.mark.parametrize("base,num_cl", [("cifar10", 3), ("min20", 6), ("digits", 1)])
def test_derived_forms_equal_datasets_own(base, num_cl):
    names = get_base(base).class_names
    feats = features(names, num_cl)
    assert isinstance(feats, Features) and feats.to_dict() == features_dict(names, num_cl)
    assert feats["ord_labels"].names == list(names) and feats["cl_labels"].length == num_cl
    ours = arrow_schema(names, num_cl)
    assert ours.equals(feats.arrow_schema, check_metadata=True)
    assert Features.from_arrow_schema(ours) == feats
    assert card_features(names, num_cl) == DatasetInfo(features=feats)._to_yaml_dict()["features"]
