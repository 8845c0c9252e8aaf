"""Where bytes live: locations (a local path or a URL), the storage backends behind one `Storage` interface (local
disk, object storage through fsspec), atomic file placement, outputs behind one `Destination` interface (one writer,
replacements a kill cannot lose; `output`, over `outdir` for a local folder) and reading media under a media root.
Code above this layer never asks "local or URL?"."""
