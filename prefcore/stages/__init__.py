"""The stages of a run, in the order ``prefcore.pipeline`` composes them.

Each stage is a module with one job, takes what earlier stages produced and returns a small
result naming what it produced, so that data flows forward:

- ``session``: the run folder, the lifecycle hooks, the caller's state kept (``RunContext``);
- ``feedback``: every source's records, split once into training and held-out (``FeedbackData``);
- ``policy``: the tokenizer and the trainable model, loaded or given in memory (``Policy``);
- ``warm_start``: SFT on demonstrations (``WarmStart``);
- ``preference_models``: reward networks, one, an ensemble or a soup (``PreferenceModels``);
- ``relabel``: the training pairs re-judged by the reward model (records);
- ``training``: the usage objectives train the policy (``Trained``);
- ``online``: an online objective trains on the policy's own samples, scored by ``[[reward]]``;
- ``loops``: ``[loop]`` online DPO or best-of-n, offline objectives on the policy's ranked samples;
- ``evaluate``: the evaluators before, during and after training (``Evaluation``);
- ``report``: the final model and ``report.md`` (``RunResult``).
"""

from __future__ import annotations

from prefcore.stages.evaluate import Evaluation
from prefcore.stages.feedback import FeedbackData
from prefcore.stages.feedback import InMemoryFeedback
from prefcore.stages.feedback import gather_feedback
from prefcore.stages.feedback import records_from_rows
from prefcore.stages.online import train_online
from prefcore.stages.policy import Policy
from prefcore.stages.policy import start_policy
from prefcore.stages.preference_models import PreferenceModels
from prefcore.stages.preference_models import train_preference_models
from prefcore.stages.relabel import relabel_pairs
from prefcore.stages.report import RunResult
from prefcore.stages.report import write_outputs
from prefcore.stages.session import RunContext
from prefcore.stages.session import RunHooks
from prefcore.stages.session import caller_state_kept
from prefcore.stages.session import prepare_run_dir
from prefcore.stages.session import transformers_quiet
from prefcore.stages.training import Trained
from prefcore.stages.training import train_policy
from prefcore.stages.warm_start import WarmStart
from prefcore.stages.warm_start import load_demonstrations
from prefcore.stages.warm_start import warm_start

__all__ = [
    "Evaluation",
    "FeedbackData",
    "InMemoryFeedback",
    "Policy",
    "PreferenceModels",
    "RunContext",
    "RunHooks",
    "RunResult",
    "Trained",
    "WarmStart",
    "caller_state_kept",
    "gather_feedback",
    "load_demonstrations",
    "prepare_run_dir",
    "records_from_rows",
    "relabel_pairs",
    "start_policy",
    "train_online",
    "train_policy",
    "train_preference_models",
    "transformers_quiet",
    "warm_start",
    "write_outputs",
]
