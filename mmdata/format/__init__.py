"""What a dataset, a view and a mixture are on disk: every name (`names`), the shard files and their indexes
(`sinks` write them, `reader` reads them, `ustar` parses tar members, `shards` are the per-shard records), the
manifests with their version check (`manifests`), a view's index files (`views`) and integrity checks
(`integrity`). A shard-format change touches only this package."""
