"""Where bytes live: locations (a local path or a URL), the storage backends behind one `Storage` interface (local
disk, object storage through fsspec), atomic file placement, output directories (one writer, replacements a kill
cannot lose) and reading media under a media root. Code above this layer never asks "local or URL?"."""
