package proto

import (
	"errors"
	"io"

	"google.golang.org/protobuf/encoding/protowire"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ListChunks is the part of the stream Cluster.List returns that
// CollectList reads: the generated client's
// grpc.ServerStreamingClient[ListResponse] is one.
type ListChunks interface {
	Recv() (*ListResponse, error)
}

// CollectList receives every chunk of a List answer (see Cluster.List in
// api.proto) and returns them as one response. It takes the generated
// client's results as they are, so a whole list is one line:
//
//	resp, err := proto.CollectList(proto.NewClusterClient(conn).List(ctx, req))
//
// An error part way returns that error and nothing else: the chunks
// received are only part of the snapshot, so the caller lists again. It
// reads until the stream ends, so the call's resources are released
// without cancelling its context.
func CollectList(stream ListChunks, err error) (*ListResponse, error) {
	if err != nil {
		return nil, err
	}
	var out *ListResponse
	var mismatch error
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch {
		case out == nil:
			out = &ListResponse{Items: chunk.GetItems(), ResourceVersion: chunk.GetResourceVersion()}
		case chunk.GetResourceVersion() != out.GetResourceVersion():
			// Never from a correct master: one List is one snapshot.
			mismatch = status.Errorf(codes.Internal, "list: chunks of one answer carry resourceVersions %d and %d: list again",
				out.GetResourceVersion(), chunk.GetResourceVersion())
		default:
			out.Items = append(out.Items, chunk.GetItems()...)
		}
	}
	if mismatch != nil {
		return nil, mismatch
	}
	if out == nil {
		// A master always sends at least one chunk, carrying the
		// resourceVersion a watch must start from; safe to retry.
		return nil, status.Error(codes.Unavailable, "list: the answer ended without any chunk (no resourceVersion): list again")
	}
	return out, nil
}

// EncodedListResponse is a ListResponse whose items are already encoded
// Objects (a store's bytes): the gRPC codec writes it as the ListResponse
// it is, without decoding and encoding the items again. A server sends it
// with SendMsg on a List stream; clients receive a ListResponse.
type EncodedListResponse struct {
	Items           [][]byte
	ResourceVersion uint64
}

func (m *EncodedListResponse) wireSize() int {
	n := 0
	for _, b := range m.Items {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(b))
	}
	if m.ResourceVersion != 0 {
		n += protowire.SizeTag(2) + protowire.SizeVarint(m.ResourceVersion)
	}
	return n
}

// appendWire appends the wire form of ListResponse{items, resource_version}
// to b, fields in number order as the generated code writes them.
func (m *EncodedListResponse) appendWire(b []byte) []byte {
	for _, item := range m.Items {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, item)
	}
	if m.ResourceVersion != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, m.ResourceVersion)
	}
	return b
}

// EncodedWatchEvent is a WatchEvent whose object is already encoded (a
// store's bytes): encoded once for every watcher it goes to. A server
// sends it with SendMsg on a Watch stream; clients receive a WatchEvent.
type EncodedWatchEvent struct {
	Type            string
	Object          []byte // nil for none
	ResourceVersion uint64
}

func (m *EncodedWatchEvent) wireSize() int {
	n := 0
	if m.Type != "" {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(m.Type))
	}
	if m.Object != nil {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(m.Object))
	}
	if m.ResourceVersion != 0 {
		n += protowire.SizeTag(3) + protowire.SizeVarint(m.ResourceVersion)
	}
	return n
}

// appendWire appends the wire form of WatchEvent{type, object,
// resource_version} to b, fields in number order.
func (m *EncodedWatchEvent) appendWire(b []byte) []byte {
	if m.Type != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, m.Type)
	}
	if m.Object != nil {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Object)
	}
	if m.ResourceVersion != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, m.ResourceVersion)
	}
	return b
}
