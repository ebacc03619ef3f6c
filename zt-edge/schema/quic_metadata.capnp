# Header of each flow stream between the edge and cloudflared, after the 6-byte signature
# and the 2-byte version.
#
# Written for zt from the published facts of cloudflared's `quic_metadata_protocol.capnp`:
# same file id, struct names (from which the struct ids derive), ordinals and types.
@0xb29021ef7421cc32;

# Sent by the edge: what cloudflared should dial.
struct ConnectRequest {
  dest @0 :Text;                  # "ip:port" for tcp
  type @1 :ConnectionType;
  metadata @2 :List(Metadata);
}

enum ConnectionType {
  http @0;
  websocket @1;
  tcp @2;
}

struct Metadata {
  key @0 :Text;
  val @1 :Text;
}

# Sent by cloudflared: an empty error means the origin was reached.
struct ConnectResponse {
  error @0 :Text;
  metadata @1 :List(Metadata);
}
