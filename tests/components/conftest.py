"""Fixtures of the components tests: the data stages run once per session on small raw fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pipeline_data(tmp_path_factory, ray_session):
    """raw -> ingested -> tokenizers -> tokens on the fixtures of tests/fixtures/raw_data.py (PipelineData)."""
    from tests.fixtures.pipeline_data import build_pipeline_data

    return build_pipeline_data(tmp_path_factory.mktemp("pipeline"))
