"""The work of each pipeline step as plain functions: the KFP components in ``pipelines.training`` are thin
wrappers around these, so the steps can be tested, and run, without KFP."""
