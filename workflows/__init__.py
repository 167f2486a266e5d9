"""Commands that chain stages end to end: `gaitlu demo` (synthetic data -> shards -> training -> export
-> enrollment -> the service) and `gaitlu eval` (a labelled set -> a baseline's, a checkpoint's or an
artifact's embeddings -> a protocol's report). Nothing imports them but the command face."""
