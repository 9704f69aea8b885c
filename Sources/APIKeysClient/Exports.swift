// The client's requests and results are the wire types: `import APIKeysClient` brings them along.
@_exported public import APIKeysWire
