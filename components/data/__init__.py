"""Data stages and what training reads: ingest (readers, quarantine), tokenizers, pre-tokenization, datasets."""
