# Registration RPC spoken by cloudflared on the first stream of each QUIC connection.
#
# Written for zt from the published facts of cloudflared's `tunnelrpc.capnp`: the file, struct
# and interface ids, field ordinals and types are the same, so that messages are compatible on
# the wire. Only the parts the zt edge serves are declared here; the legacy registration
# interfaces and the UDP session and remote configuration interfaces are left out.
@0xdb8274f9144abc7e;

# Who the connector is and what it can do.
struct ClientInfo @0x83ced0145b2f114b {
  clientId @0 :Data;        # 16 bytes, the connector's UUID
  features @1 :List(Text);  # capability names, unordered
  version @2 :Text;
  arch @3 :Text;            # "os_cpu", e.g. linux_amd64
}

# Per-connection parameters of registerConnection.
struct ConnectionOptions @0xb4bf9861fe035d04 {
  client @0 :ClientInfo;
  originLocalIp @1 :Data;          # 4 or 16 address bytes
  replaceExisting @2 :Bool;
  compressionQuality @3 :UInt8;
  numPreviousAttempts @4 :UInt8;
}

# The edge's answer to registerConnection.
struct ConnectionResponse @0xdbaa9d03d52b62dc {
  result :union {
    error @0 :ConnectionError;
    connectionDetails @1 :ConnectionDetails;
  }
}

struct ConnectionError @0xf5f383d2785edb86 {
  cause @0 :Text;
  retryAfter @1 :Int64;   # nanoseconds
  shouldRetry @2 :Bool;
}

struct ConnectionDetails @0xb5f39f082b9ac18a {
  uuid @0 :Data;                     # 16 bytes, the edge's id for this connection
  locationName @1 :Text;
  tunnelIsRemotelyManaged @2 :Bool;
}

# The account tag and the tunnel secret itself, as cloudflared sends them.
struct TunnelAuth @0x9496331ab9cd463f {
  accountTag @0 :Text;
  tunnelSecret @1 :Data;
}

# The bootstrap capability the edge offers on a connector's control stream.
interface RegistrationServer @0xf71695ec7fe85497 {
  registerConnection @0 (auth :TunnelAuth, tunnelId :Data, connIndex :UInt8,
                         options :ConnectionOptions) -> (result :ConnectionResponse);
  unregisterConnection @1 () -> ();
  updateLocalConfiguration @2 (config :Data) -> ();
}
