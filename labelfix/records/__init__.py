"""TFRecords: the Example codec and feature keys, pairing, per-pair preparation, shards and the
manifest, the local writer, and verify."""
