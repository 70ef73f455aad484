"""An example third-party prefcore plugin: one method of each kind, to copy for your own.

Each module is one method, registered under the module's name through its own entry point
(``pyproject.toml``), and written only against prefcore's public surface:

- ``example_shorter_is_better`` (feedback source): of two completions the shorter is preferred;
- ``example_hinge_reward`` (preference model): the pairwise ranking hinge max(0, m − (r_c − r_r));
- ``example_offset_dpo`` (usage objective): DPO whose margin must clear a fixed offset Δ;
- ``example_length_ratio`` (evaluator): mean policy completion length over the reference's;
- ``example_median_baseline`` (online usage objective): REINFORCE with the group's median reward as baseline.

prefcore's ``docs/writing-a-plugin.md`` shows these files verbatim, and prefcore's tests run them.
"""
