"""The embedded demo's generated inputs: corpora, tokenizer, tiny Llama, GovReport/OpenOrca/UltraChat rows."""
