"""One module per revision, applied in order; never edit one that has shipped."""
