// The client's requests and results are the wire types: `import APIKeysClient` brings them along.
@_exported public import APIKeysWire
// So are the audit chain's types that ``APIKeysClient/verifyAuditChain(sinceMS:pageSize:timeout:onPage:)``
// hands out (points, states, the verifier and its `Break`): the client owns them in its API.
@_exported public import enum APIKeysCore.AuditChain
@_exported public import struct APIKeysCore.AuditChainVerifier
@_exported public import struct APIKeysCore.AuditChainVerification
