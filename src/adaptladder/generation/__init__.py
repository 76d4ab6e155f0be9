"""Generation (text-to-text) tasks: metrics, built-in data sets, batched/constrained decoding.

Foundations only for now (issue #17): these modules are not yet wired into the ladder, the
CLI or the report. Heavy libraries (torch, transformers, rouge-score, sacrebleu, jsonschema,
outlines) are imported inside functions, so importing this package stays cheap.
"""
