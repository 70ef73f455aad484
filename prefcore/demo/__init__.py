"""The embedded demo task: a tiny request/reply language with a programmatic preference rule.

``world`` holds the closed world (facts, request templates, reply phrases), ``rule`` the
preference rule and its judge, ``task`` the requests, the fixed train/held-out split and
the data sets, ``tokenizer`` the word-level tokenizer and ``model`` the tiny Llama;
``groups`` two communities of annotators whose rules differ on reply length (``demo_groups``).
The feedback source ``demo_rule`` (``prefcore.plugins.feedback.demo_rule``) serves them
to the engine. Importing this package imports nothing heavy; import the modules.
"""
