"""Names that the compiler writes and every other layer (engine, submit, ledger) reads back."""

# JSON maps on each WorkflowTemplate: pipeline input -> the parameter carrying its S3 key, and pipeline output ->
# "<task>.<artifact>" (or "onExit.<task>.<artifact>").
INPUTS_ANNOTATION = "kai-flows.io/inputs"
OUTPUTS_ANNOTATION = "kai-flows.io/outputs"
