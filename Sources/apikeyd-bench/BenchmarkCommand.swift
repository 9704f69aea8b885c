import ArgumentParser

/// `apikeyd-bench`: benchmarks for apikeyd, separate from the tests.
@main
struct BenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikeyd-bench",
        abstract: "Benchmarks for apikeyd.",
        subcommands: [InProcessBenchmark.self])
}
