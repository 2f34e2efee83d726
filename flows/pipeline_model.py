"""An experiment's trained pipelines as one MLflow model (logged from code, no pickles).

Input: user_id and arm per request; output: the slate's item ids. Features come from the online
feature store of the lake named by the `lake` and `day` params (the experiment's `online_store`:
in-process, or its server), as a real model server reads them.
"""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from common.typedconf import from_mapping
from components.experiment import ExperimentConfig
from components.features.online import ServerStore, open_store
from components.features.store import FeatureStore
from components.lake import Lake
from components.serving import build_pipelines


class PipelineModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        root = Path(context.artifacts["models"])
        self.experiment_ = from_mapping(ExperimentConfig, json.loads((root / "experiment.json").read_text()))
        self.pipelines_ = build_pipelines(self.experiment_.arms, self.experiment_.slate_size, root)
        self.stores_: dict[tuple[str, int], FeatureStore | ServerStore] = {}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        params = params or {}
        key = (str(params["lake"]), int(params["day"]))
        if key not in self.stores_:
            # The experiment's online store: the lake's tables in this process, or its Redis server.
            self.stores_[key] = open_store(Lake(key[0]), key[1], None, self.experiment_.online_store)
        store = self.stores_[key]
        users = model_input["user_id"].to_numpy(np.int64)
        arms = model_input["arm"].astype(str).to_numpy()
        unknown = sorted(set(arms) - set(self.pipelines_))
        if unknown:
            raise ValueError(f"unknown arms {unknown}; this model serves {sorted(self.pipelines_)}")
        out = np.full((len(users), self.experiment_.slate_size), -1, np.int64)
        for arm in np.unique(arms):
            rows = np.flatnonzero(arms == arm)
            out[rows] = self.pipelines_[arm].serve(store.user_batch(users[rows])).items
        return out


mlflow.models.set_model(PipelineModel())
