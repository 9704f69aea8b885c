import Foundation

/// Defaults that an environment variable may override, for options of the executables.
enum Environment {
    static func string(_ name: String, default value: String) -> String {
        optionalString(name) ?? value
    }

    static func optionalString(_ name: String) -> String? {
        ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
    }

    static func int(_ name: String, default value: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap(Int.init) ?? value
    }
}
