"""The foundation every layer and every package builds on, importing nothing else of mmdata: the error types
(`errors`), the `Record` contract (`schema`) and its rules, each stated once (`rules`), typed options validated from
YAML and flags (`options`), the command lines generated from them (`flags`), what every command line shares
(`commands`), image decoding and checks (`media`) and newline scanning (`lines`). Public: the trainer and builders
(ours and plugins) use it directly."""
