import ArgumentParser

/// `apikeyd-bench`: benchmarks for apikeyd, separate from the tests.
@main
struct BenchmarkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikeyd-bench",
        abstract: "Benchmarks for apikeyd.",
        subcommands: [
            LoadBenchmark.self, InProcessBenchmark.self, AuditSinkBenchmark.self, StagesBenchmark.self,
            SeedCommand.self,
            PropagationBenchmark.self, FloorServer.self,
        ])
}
