#!/usr/bin/env python3
"""Generates the Swift half of the wire contract from proto/: one file per .proto file.

Input: a FileDescriptorSet with source info (protoc-c -o FILE --include_source_info), so that the
.proto comments become the Swift doc comments. Output: Swift value types for every message and
enum, their bridging to the protoc-c structs of Sources/CAPIKeysProto, and a typed descriptor per
RPC with a service protocol and its router. Deterministic: the same input gives the same bytes.

    swift_wire.py DESCRIPTOR_SET OUT_DIR

A field type the generator does not know is an error naming the field, never a silent skip.
"""

import os
import re
import sys

from google.protobuf import descriptor_pb2 as d

F = d.FieldDescriptorProto

# Swift types for the scalar protobuf types the contract uses, with their C representation.
SCALARS = {
    F.TYPE_STRING: "String",
    F.TYPE_BYTES: "[UInt8]",
    F.TYPE_BOOL: "Bool",
    F.TYPE_INT32: "Int32",
    F.TYPE_INT64: "Int64",
    F.TYPE_UINT32: "UInt32",
    F.TYPE_UINT64: "UInt64",
    F.TYPE_SINT32: "Int32",
    F.TYPE_SINT64: "Int64",
    F.TYPE_FIXED32: "UInt32",
    F.TYPE_FIXED64: "UInt64",
    F.TYPE_SFIXED32: "Int32",
    F.TYPE_SFIXED64: "Int64",
    F.TYPE_DOUBLE: "Double",
    F.TYPE_FLOAT: "Float",
}
DEFAULTS = {"String": '""', "[UInt8]": "[]", "Bool": "false", "Double": "0", "Float": "0"}

# Fields whose Swift type is a RawRepresentable wrapper of their wire type (hand-written in
# APIKeysWire), so that users see a typed value instead of a bare number.
WRAPPED = {
    "apikeys.v1.Envelope.status": "StatusCode",
}

# Words written in capitals inside Swift names, as Swift's API guidelines ask for acronyms.
ACRONYMS = {"id": "ID", "ms": "MS", "url": "URL", "http": "HTTP", "ip": "IP", "uri": "URI"}
SWIFT_KEYWORDS = {
    "associatedtype", "class", "deinit", "enum", "extension", "func", "import", "init", "inout",
    "internal", "let", "operator", "private", "protocol", "public", "static", "struct", "subscript",
    "typealias", "var", "break", "case", "continue", "default", "defer", "do", "else", "fallthrough",
    "for", "guard", "if", "in", "repeat", "return", "switch", "where", "while", "as", "catch",
    "false", "is", "nil", "rethrows", "super", "self", "throw", "throws", "true", "try", "Type",
}


def fail(message):
    sys.exit(f"codegen: {message}")


def swift_name(snake, first_lower=True):
    words = [w for w in snake.split("_") if w]
    out = []
    for index, word in enumerate(words):
        if index == 0 and first_lower:
            out.append(word.lower())
        elif word.lower() in ACRONYMS:
            out.append(ACRONYMS[word.lower()])
        else:
            out.append(word[:1].upper() + word[1:])
    name = "".join(out)
    return f"`{name}`" if name in SWIFT_KEYWORDS else name


def lower_first(name):
    return name[:1].lower() + name[1:]


def camel_to_lower(name):
    """protoc-c's CamelToLower: an underscore before each capital that follows a non-capital."""
    out, was_upper = "", True
    for char in name:
        if char.isupper():
            if not was_upper:
                out += "_"
            out += char.lower()
            was_upper = True
        else:
            out += char
            was_upper = False
    return out


def c_struct(package, path):
    """protoc-c's struct name, e.g. Apikeys__V1__Envelope__MetadataEntry."""
    parts = [p[:1].upper() + p[1:] for p in package.split(".")] + list(path)
    return "__".join(parts)


def c_lower(package, path):
    """protoc-c's function prefix, e.g. apikeys__v1__envelope__metadata_entry."""
    return "__".join(package.split(".") + [camel_to_lower(p) for p in path])


def c_upper(package, path):
    return c_lower(package, path).upper()


class Comments:
    """Leading comments of a file's elements, by their source-info path."""

    def __init__(self, file):
        self.by_path = {}
        for location in file.source_code_info.location:
            text = location.leading_comments or location.trailing_comments
            if text:
                self.by_path[tuple(location.path)] = text

    def doc(self, path, indent):
        text = self.by_path.get(tuple(path))
        if not text:
            return ""
        lines = [line[1:] if line.startswith(" ") else line for line in text.rstrip("\n").split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        pad = " " * indent
        return "".join(f"{pad}///{' ' if line else ''}{line}\n" for line in lines)


class Generator:
    def __init__(self, files):
        self.files = files
        self.messages = {}  # ".apikeys.v1.ApiKey" -> (file, path tuple, DescriptorProto)
        self.enums = {}
        for file in files:
            for message, path in walk_messages(file.message_type, ()):
                self.messages[f".{file.package}." + ".".join(path)] = (file, path, message)
                for enum in message.enum_type:
                    self.enums[f".{file.package}." + ".".join(path + (enum.name,))] = (file, path + (enum.name,), enum)
            for enum in file.enum_type:
                self.enums[f".{file.package}.{enum.name}"] = (file, (enum.name,), enum)

    def rpc_role(self, full, pad):
        """For a message without a comment: which call it is the request or the reply of."""
        roles = []
        for file in self.files:
            for service in file.service:
                for rpc in service.method:
                    path = f"`/{file.package}.{service.name}/{rpc.name}`"
                    if rpc.input_type == "." + full:
                        roles.append(f"The request of {path}.")
                    if rpc.output_type == "." + full:
                        roles.append(f"The reply of {path}.")
        return "".join(f"{pad}/// {role}\n" for role in roles)

    def swift_type_name(self, full_name):
        entry = self.messages.get(full_name) or self.enums.get(full_name)
        if entry is None:
            fail(f"unknown type {full_name}")
        return ".".join(entry[1])

    # MARK: files

    def file(self, file):
        comments = Comments(file)
        out = [
            f"// generated by codegen/generate.sh from proto/{file.name}: do not edit\n",
            "internal import CAPIKeysProto\n",
        ]
        for index, enum in enumerate(file.enum_type):
            out.append("\n" + self.enum(file, (enum.name,), enum, comments, (5, index), 0))
        for index, message in enumerate(file.message_type):
            out.append("\n" + self.message(file, (message.name,), message, comments, (4, index), 0))
        for index, service in enumerate(file.service):
            out.append("\n" + self.service(file, service, comments, (6, index)))
        return "".join(out)

    # MARK: enums

    def enum(self, file, path, enum, comments, source, indent):
        pad = " " * indent
        name = path[-1]
        prefix = camel_to_lower(name).upper() + "_"
        cases = []
        for index, value in enumerate(enum.value):
            short = value.name[len(prefix):] if value.name.startswith(prefix) else value.name
            cases.append((swift_name(short.lower()), value.number, comments.doc(source + (2, index), indent + 4)))
        c_type = c_struct(file.package, path)
        lines = [comments.doc(source, indent)]
        lines.append(f"{pad}public enum {name}: Hashable, Sendable {{\n")
        for case, _, doc in cases:
            lines.append(f"{doc}{pad}    case {case}\n")
        lines.append(f"{pad}    /// A value this version of the contract does not know (proto3 enums are open).\n")
        lines.append(f"{pad}    case unrecognized(Int32)\n\n")
        lines.append(f"{pad}    public init(rawValue: Int32) {{\n{pad}        switch rawValue {{\n")
        for case, number, _ in cases:
            lines.append(f"{pad}        case {number}: self = .{case}\n")
        lines.append(f"{pad}        default: self = .unrecognized(rawValue)\n{pad}        }}\n{pad}    }}\n\n")
        lines.append(f"{pad}    public var rawValue: Int32 {{\n{pad}        switch self {{\n")
        for case, number, _ in cases:
            lines.append(f"{pad}        case .{case}: {number}\n")
        lines.append(f"{pad}        case .unrecognized(let value): value\n{pad}        }}\n{pad}    }}\n\n")
        lines.append(f"{pad}    // protoc-c's enums are UInt32; the contract's values are Int32.\n")
        lines.append(f"{pad}    init(_ c: {c_type}) {{ self.init(rawValue: Int32(bitPattern: c.rawValue)) }}\n")
        lines.append(f"{pad}    var cValue: {c_type} {{ {c_type}(rawValue: UInt32(bitPattern: rawValue)) }}\n")
        lines.append(f"{pad}}}\n")
        return "".join(lines)

    # MARK: messages

    def message(self, file, path, message, comments, source, indent):
        pad = " " * indent
        full = f"{file.package}." + ".".join(path)
        is_map_entry = message.options.map_entry
        access = "" if is_map_entry else "public "
        c_type = c_struct(file.package, path)
        c_fn = c_lower(file.package, path)
        fields = [self.field(file, path, message, field, comments.doc(source + (2, i), indent + 4))
                  for i, field in enumerate(message.field)]

        lines = [comments.doc(source, indent) or self.rpc_role(full, pad)]
        lines.append(f"{pad}{access}struct {path[-1]}: WireMessage{', WireMapEntry' if is_map_entry else ''} {{\n")
        for field in fields:
            lines.append(field.declaration(pad + "    ", access))
        if fields:
            lines.append("\n")
        lines.append(f"{pad}    {access}init() {{}}\n")
        if fields:
            params = ", ".join(f"{f.swift}: {f.init_type} = {f.init_default}" for f in fields)
            lines.append(f"\n{pad}    {access}init({params}) {{\n")
            for f in fields:
                lines.append(f"{pad}        self.{f.storage} = {f.swift}\n")
            lines.append(f"{pad}    }}\n")
        for f in fields:
            lines.append(f.accessors(pad + "    ", access))

        unpack = f"{c_fn}__unpack"
        if is_map_entry:
            # protoc-c writes no unpack function for a map entry: it is only read inside its parent.
            unpack = "{ _, _, _ in nil }"
        lines.append(f"\n{pad}    {access}static let codec = WireCodec<{path[-1]}>(\n")
        lines.append(f'{pad}        "{full}", initialize: {c_fn}__init, unpack: {unpack}, read: read, write: write)\n')

        lines.append(f"\n{pad}    /// The fields of an unpacked struct.\n")
        if fields:
            lines.append(f"{pad}    static func read(_ c: {c_type}, _ arena: Arena) throws -> {path[-1]} {{\n")
            lines.append(f"{pad}        var value = {path[-1]}()\n")
            for f in fields:
                lines.append("".join(f"{pad}        {line}\n" for line in f.read_lines(full)))
            lines.append(f"{pad}        return value\n{pad}    }}\n")
        else:
            lines.append(f"{pad}    static func read(_: {c_type}, _: Arena) throws -> {path[-1]} {{ {path[-1]}() }}\n")
        lines.append(f"\n{pad}    /// Sets the fields of an initialised struct.\n")
        lines.append(f"{pad}    static func write(_ value: {path[-1]}, _ c: inout {c_type}, _ arena: Arena) throws {{\n")
        if not fields:
            lines[-1] = f"{pad}    static func write(_: {path[-1]}, _: inout {c_type}, _: Arena) throws {{\n"
        for f in fields:
            lines.append("".join(f"{pad}        {line}\n" for line in f.write_lines(full)))
        lines.append(f"{pad}    }}\n")

        for index, nested in enumerate(message.nested_type):
            lines.append("\n" + self.message(file, path + (nested.name,), nested, comments,
                                             source + (3, index), indent + 4))
        for index, enum in enumerate(message.enum_type):
            lines.append("\n" + self.enum(file, path + (enum.name,), enum, comments, source + (4, index), indent + 4))
        lines.append(f"{pad}}}\n")
        return "".join(lines)

    def field(self, file, path, message, field, doc):
        full = f"{file.package}." + ".".join(path) + "." + field.name
        repeated = field.label == F.LABEL_REPEATED
        oneof = None
        if field.HasField("oneof_index"):
            siblings = [f for f in message.field if f.HasField("oneof_index") and f.oneof_index == field.oneof_index]
            oneof = message.oneof_decl[field.oneof_index].name
            if len(siblings) != 1:
                fail(f"{full}: a oneof of several fields is not supported yet (only one-field oneofs, as optional)")
        if field.type == F.TYPE_MESSAGE:
            entry = self.messages[field.type_name]
            if repeated and entry[2].options.map_entry:
                key, value = entry[2].field
                if key.type != F.TYPE_STRING or value.type != F.TYPE_STRING:
                    fail(f"{full}: only map<string, string> is supported yet")
                return MapField(self, file, path, field, doc, entry)
            return MessageField(self, file, path, field, doc, repeated, entry)
        if field.type == F.TYPE_ENUM:
            if repeated:
                fail(f"{full}: repeated enums are not supported yet")
            return EnumField(self, file, path, field, doc, oneof)
        if field.type not in SCALARS:
            fail(f"{full}: field type {field.type} is not supported yet")
        if repeated and field.type != F.TYPE_STRING:
            fail(f"{full}: repeated {SCALARS[field.type]} is not supported yet")
        return ScalarField(self, file, path, field, doc, repeated, oneof, WRAPPED.get(full))

    # MARK: services

    def service(self, file, service, comments, source):
        full = f"{file.package}.{service.name}"
        methods = []
        for index, rpc in enumerate(service.method):
            if rpc.client_streaming or rpc.server_streaming:
                fail(f"{full}/{rpc.name}: streaming RPCs are not supported")
            methods.append((lower_first(rpc.name), rpc, self.swift_type_name(rpc.input_type),
                            self.swift_type_name(rpc.output_type), comments.doc(source + (2, index), 4)))
        lines = [comments.doc(source, 0)]
        lines.append(f"public enum {service.name} {{\n")
        lines.append(f"    /// The service's full name.\n")
        lines.append(f'    public static let serviceName = "{full}"\n')
        for name, rpc, request, response, doc in methods:
            lines.append(f"\n{doc}")
            lines.append(f"    public static let {name} = RPCMethod<{request}, {response}>(\n")
            lines.append(f'        service: serviceName, name: "{rpc.name}")\n')
        names = ", ".join(m[0] for m in methods)
        lines.append(f"\n    /// Every method of the service, in the order of the .proto file.\n")
        lines.append(f"    public static let methods: [any RPCMethodDescriptor] = [{names}]\n")
        lines.append("}\n")

        lines.append(f"\n/// An implementation of {service.name}: one function per method, with a context of its choosing.\n")
        lines.append(f"public protocol {service.name}Service: Sendable {{\n")
        lines.append("    /// What the caller passes to each call besides its request (who is calling, the deadline...).\n")
        lines.append("    associatedtype Context\n")
        for name, rpc, request, response, doc in methods:
            lines.append(f"\n{doc}")
            lines.append(f"    func {name}(_ request: {request}, context: Context) async throws -> {response}\n")
        lines.append("}\n")

        lines.append(f"\nextension {service.name} {{\n")
        lines.append(f"    /// A router that sends each method of {service.name} to `service`.\n")
        lines.append(f"    public static func router<Service: {service.name}Service>(for service: Service)"
                     f" -> RPCRouter<Service.Context> {{\n")
        lines.append(f"        var router = RPCRouter<Service.Context>()\n")
        for name, *_ in methods:
            lines.append(f"        router.register({name}) {{ try await service.{name}($0, context: $1) }}\n")
        lines.append("        return router\n    }\n}\n")
        return "".join(lines)

    def contract(self):
        services = [s.name for f in self.files for s in f.service]
        messages = [".".join(path) for _, path, message in self.messages.values() if not message.options.map_entry]
        lines = [
            "// generated by codegen/generate.sh from proto/: do not edit\n\n",
            "/// The whole contract of proto/.\n",
            "public enum WireContract {\n",
            "    /// Every method of every service.\n",
            "    public static let methods: [any RPCMethodDescriptor] = "
            + " + ".join(f"{name}.methods" for name in services) + "\n\n",
            "    /// Every message type (map entries aside), in proto order: what tests and the fuzzer cover.\n",
            "    public static let messageTypes: [any WireMessage.Type] = [\n",
            *[f"        {name}.self,\n" for name in messages],
            "    ]\n",
            "}\n",
        ]
        return "".join(lines)


def walk_messages(messages, prefix):
    for message in messages:
        path = prefix + (message.name,)
        yield message, path
        yield from walk_messages(message.nested_type, path)


class Field:
    def __init__(self, gen, file, path, field, doc):
        self.gen, self.field, self.doc = gen, field, doc
        self.proto = field.name
        self.swift = swift_name(field.name)
        self.c = field.name  # protoc-c keeps the .proto spelling
        self.storage = self.swift

    def declaration(self, pad, access):
        return f"{self.doc}{pad}{access}var {self.swift}: {self.swift_type} = {self.default}\n"

    def accessors(self, pad, access):
        return ""

    @property
    def init_type(self):
        return self.swift_type

    @property
    def init_default(self):
        return self.default

    def error_args(self, full):
        return f'field: "{self.proto}", of: "{full}"'


class ScalarField(Field):
    def __init__(self, gen, file, path, field, doc, repeated, oneof, wrapper):
        super().__init__(gen, file, path, field, doc)
        self.repeated, self.wrapper = repeated, wrapper
        self.kind = field.type
        base = SCALARS[field.type]
        self.base = base
        self.oneof = oneof
        if oneof:
            self.case_field = f"{oneof}_case"
            self.case_value = c_upper(file.package, path) + "__" + oneof.upper() + "_" + field.name.upper()
        if repeated:
            self.swift_type, self.default = f"[{base}]", "[]"
        elif wrapper:
            self.swift_type, self.default = wrapper, f"{wrapper}(rawValue: 0)"
        else:
            self.swift_type, self.default = base, DEFAULTS.get(base, "0")
        if oneof:
            self.swift_type, self.default = self.swift_type + "?", "nil"

    def c_read(self, full):
        if self.kind == F.TYPE_STRING:
            if self.repeated:
                return f"try arena.strings(c.{self.c}, count: c.n_{self.c}, {self.error_args(full)})"
            return f"try arena.string(c.{self.c}, {self.error_args(full)})"
        if self.kind == F.TYPE_BYTES:
            return f"arena.bytes(c.{self.c})"
        if self.kind == F.TYPE_BOOL:
            return f"c.{self.c} != 0"
        if self.wrapper:
            return f"{self.wrapper}(rawValue: c.{self.c})"
        return f"c.{self.c}"

    def c_write(self, value, full):
        if self.kind == F.TYPE_STRING:
            if self.repeated:
                return f"(c.n_{self.c}, c.{self.c}) = try arena.cStrings({value}, {self.error_args(full)})"
            return f"c.{self.c} = try arena.cString({value}, {self.error_args(full)})"
        if self.kind == F.TYPE_BYTES:
            return f"c.{self.c} = arena.binary({value})"
        if self.kind == F.TYPE_BOOL:
            return f"c.{self.c} = {value} ? 1 : 0"
        if self.wrapper:
            return f"c.{self.c} = {value}.rawValue"
        return f"c.{self.c} = {value}"

    def read_lines(self, full):
        if self.oneof:
            return [f"if c.{self.case_field} == {self.case_value} {{",
                    f"    value.{self.swift} = {self.c_read(full)}", "}"]
        return [f"value.{self.swift} = {self.c_read(full)}"]

    def write_lines(self, full):
        if self.oneof:
            return [f"if let {self.swift} = value.{self.swift} {{",
                    f"    c.{self.case_field} = {self.case_value}",
                    f"    {self.c_write(self.swift, full)}", "}"]
        return [self.c_write(f"value.{self.swift}", full)]


class EnumField(Field):
    def __init__(self, gen, file, path, field, doc, oneof):
        super().__init__(gen, file, path, field, doc)
        if oneof:
            fail(f"{field.name}: an enum in a oneof is not supported yet")
        self.swift_type = gen.swift_type_name(field.type_name)
        self.default = f"{self.swift_type}(rawValue: 0)"

    def read_lines(self, full):
        return [f"value.{self.swift} = {self.swift_type}(c.{self.c})"]

    def write_lines(self, full):
        return [f"c.{self.c} = value.{self.swift}.cValue"]


class MessageField(Field):
    """A message field. Singular ones have presence: `key` reads as the default message when
    absent, `hasKey` tells, `clearKey()` removes it (swift-protobuf's convention)."""

    def __init__(self, gen, file, path, field, doc, repeated, entry):
        super().__init__(gen, file, path, field, doc)
        self.repeated = repeated
        self.type = ".".join(entry[1])
        self.c_type = c_struct(entry[0].package, entry[1])
        if repeated:
            self.swift_type, self.default = f"[{self.type}]", "[]"
        else:
            self.swift_type, self.default = self.type, f"{self.type}()"
            self.storage = "_" + self.swift.strip("`")
            self.capital = self.swift.strip("`")[:1].upper() + self.swift.strip("`")[1:]

    def declaration(self, pad, access):
        if self.repeated:
            return super().declaration(pad, access)
        return (f"{self.doc}{pad}{access}var {self.swift}: {self.type} {{\n"
                f"{pad}    get {{ {self.storage} ?? {self.type}() }}\n"
                f"{pad}    set {{ {self.storage} = newValue }}\n{pad}}}\n"
                f"{pad}private var {self.storage}: {self.type}?\n")

    def accessors(self, pad, access):
        if self.repeated:
            return ""
        return (f"\n{pad}/// Whether ``{self.swift.strip('`')}`` is present.\n"
                f"{pad}{access}var has{self.capital}: Bool {{ {self.storage} != nil }}\n"
                f"{pad}/// Makes ``{self.swift.strip('`')}`` absent.\n"
                f"{pad}{access}mutating func clear{self.capital}() {{ {self.storage} = nil }}\n")

    @property
    def init_type(self):
        return self.swift_type if self.repeated else self.type + "?"

    @property
    def init_default(self):
        return "[]" if self.repeated else "nil"

    def read_lines(self, full):
        if self.repeated:
            return [f"value.{self.swift} = try arena.messages(c.{self.c}, count: c.n_{self.c})"]
        return [f"if let {self.swift} = c.{self.c} {{",
                f"    value.{self.storage} = try {self.type}.read({self.swift}.pointee, arena)", "}"]

    def write_lines(self, full):
        if self.repeated:
            return [f"(c.n_{self.c}, c.{self.c}) = try arena.makeArray(value.{self.swift}, as: {self.c_type}.self)"]
        return [f"if let {self.swift} = value.{self.storage} {{",
                f"    c.{self.c} = try arena.make({self.swift}, as: {self.c_type}.self)", "}"]


class MapField(Field):
    def __init__(self, gen, file, path, field, doc, entry):
        super().__init__(gen, file, path, field, doc)
        self.entry = ".".join(entry[1])
        self.c_type = c_struct(entry[0].package, entry[1])
        self.swift_type, self.default = "[String: String]", "[:]"

    def read_lines(self, full):
        return [f"value.{self.swift} = try arena.dictionary(c.{self.c}, count: c.n_{self.c}, of: {self.entry}.self)"]

    def write_lines(self, full):
        return [f"(c.n_{self.c}, c.{self.c}) = try arena.makeMap(value.{self.swift}, of: {self.entry}.self,"
                f" as: {self.c_type}.self)"]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: swift_wire.py DESCRIPTOR_SET OUT_DIR")
    descriptors = d.FileDescriptorSet()
    with open(sys.argv[1], "rb") as handle:
        descriptors.ParseFromString(handle.read())
    files = [f for f in descriptors.file if not f.name.startswith("google/")]
    generator = Generator(files)
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for file in files:
        base = re.sub(r"\.proto$", "", file.name).replace("/", "_")
        with open(os.path.join(out, f"{base}.swift"), "w") as handle:
            handle.write(generator.file(file))
    with open(os.path.join(out, "WireContract.swift"), "w") as handle:
        handle.write(generator.contract())


if __name__ == "__main__":
    main()
