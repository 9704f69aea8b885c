import Foundation

/// Defaults that an environment variable may override, for options of the executables.
enum Environment {
    static func string(_ name: String, default value: String) -> String {
        ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 } ?? value
    }

    static func int(_ name: String, default value: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap(Int.init) ?? value
    }
}
