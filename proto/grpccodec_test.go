package proto

import (
	"context"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func benchCodec() encoding.CodecV2 { return GRPCCodec() }

func TestGRPCCodecRoundTrip(t *testing.T) {
	codec := GRPCCodec()
	if codec.Name() != "proto" {
		t.Fatalf("Name %q: gRPC picks the codec by the content subtype, which must stay proto", codec.Name())
	}
	pod := loadPod(t)
	big := Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: "big", Namespace: "default"},
		Data: map[string]string{"k": strings.Repeat("x", 64<<10)}})
	for _, tc := range []struct {
		name string
		msg  gproto.Message
	}{
		{"small", &WriteRequest{Object: Wrap(&Namespace{Metadata: &ObjectMeta{Name: "n"}}), DryRun: true}},
		{"pod", &WriteRequest{Object: pod}},
		{"pooled buffer", &WriteResponse{Object: big, Action: "created"}},
		{"empty", &WriteRequest{}},
		// Not skiff's: gRPC's standard codec marshals them.
		{"well-known type", durationpb.New(90 * time.Second)},
		{"timestamp", timestamppb.New(time.Unix(1, 2))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := codec.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			data := out.Materialize()
			out.Free()
			back := tc.msg.ProtoReflect().New().Interface()
			if err := gproto.Unmarshal(data, back); err != nil || !gproto.Equal(back, tc.msg) {
				t.Fatalf("codec's bytes decoded by the standard library: equal %v, err %v", gproto.Equal(back, tc.msg), err)
			}
			std, err := gproto.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			// Decode into a message that already holds something: gRPC's
			// codec replaces the contents, and so must this one.
			got := tc.msg.ProtoReflect().New().Interface()
			if w, ok := got.(*WriteRequest); ok {
				w.Object, w.DryRun = Wrap(&Node{Metadata: &ObjectMeta{Name: "left over"}}), true
			}
			if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(std)}, got); err != nil || !gproto.Equal(got, tc.msg) {
				t.Fatalf("codec decoding the standard library's bytes: equal %v, err %v", gproto.Equal(got, tc.msg), err)
			}
		})
	}
}

func TestGRPCCodecRefusesNonMessages(t *testing.T) {
	codec := GRPCCodec()
	if _, err := codec.Marshal("not a message"); err == nil {
		t.Error("Marshal of a string succeeded")
	}
	var s string
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{8, 1})}, &s); err == nil {
		t.Error("Unmarshal into a string succeeded")
	}
}

// TestGRPCCodecDecodedBytesAreCopied: gRPC returns the receive buffer to a
// pool after Unmarshal, so the decoded message must not point into it.
func TestGRPCCodecDecodedBytesAreCopied(t *testing.T) {
	want := &WriteRequest{Object: Wrap(&Secret{Metadata: &ObjectMeta{Name: "s", Namespace: "default"},
		Data: map[string][]byte{"k": []byte("secret")}})}
	data, err := gproto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got := &WriteRequest{}
	buf := mem.SliceBuffer(data)
	if err := GRPCCodec().Unmarshal(mem.BufferSlice{buf}, got); err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 0
	}
	if !gproto.Equal(got, want) {
		t.Fatal("the decoded request changed with the buffer it was decoded from")
	}
}

// clusterEcho answers Create with the object it was sent.
type clusterEcho struct {
	UnimplementedClusterServer
}

func (clusterEcho) Create(_ context.Context, req *WriteRequest) (*WriteResponse, error) {
	if req.GetObject().Resource() == nil {
		return nil, status.Error(codes.InvalidArgument, "object: required")
	}
	return &WriteResponse{Object: req.GetObject(), Action: "created"}, nil
}

// TestGRPCCodecOverGRPC runs a gRPC server and client on loopback with the
// codec installed the way server.go and client.go install it, and checks
// that objects and errors cross unchanged, also to and from peers that use
// gRPC's standard codec.
func TestGRPCCodecOverGRPC(t *testing.T) {
	dial := func(t *testing.T, addr string, opts ...grpc.DialOption) ClusterClient {
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return NewClusterClient(conn)
	}
	serve := func(t *testing.T, opts ...grpc.ServerOption) string {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(opts...)
		RegisterClusterServer(srv, clusterEcho{})
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
		return lis.Addr().String()
	}
	vtServer := serve(t, grpc.ForceServerCodecV2(GRPCCodec()))
	stdServer := serve(t)
	vtClient := grpc.WithDefaultCallOptions(grpc.ForceCodecV2(GRPCCodec()))

	pod := loadPod(t)
	addUnknown(pod.GetPod().GetMetadata().ProtoReflect(), 500)
	for _, tc := range []struct {
		name   string
		client ClusterClient
	}{
		{"vt client, vt server", dial(t, vtServer, vtClient)},
		{"standard client, vt server", dial(t, vtServer)},
		{"vt client, standard server", dial(t, stdServer, vtClient)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := tc.client.Create(ctx, &WriteRequest{Object: pod})
			if err != nil {
				t.Fatal(err)
			}
			if !gproto.Equal(resp.GetObject(), pod) || resp.GetAction() != "created" {
				t.Fatalf("echoed object differs: %v", resp)
			}
			_, err = tc.client.Create(ctx, &WriteRequest{})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("empty request: %v, want InvalidArgument", err)
			}
		})
	}

	// A string that is not UTF-8 is refused on arrival, as gRPC's standard
	// codec refuses it (which, in the standard client, already refuses to
	// send it).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad := Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: "bad\xff", Namespace: "default"}})
	if _, err := dial(t, vtServer, vtClient).Create(ctx, &WriteRequest{Object: bad}); status.Code(err) != codes.Internal ||
		!strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("invalid UTF-8: %v, want the server to refuse to unmarshal it", err)
	}
}

// TestUnmarshalMatchesStandard feeds Unmarshal inputs that only a
// hand-written or hostile encoder produces, on which the generated
// UnmarshalVT and the standard library disagree: Unmarshal must accept
// and refuse exactly what gproto.Unmarshal does, with an equal result.
func TestUnmarshalMatchesStandard(t *testing.T) {
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(tag(num, protowire.BytesType), s)
	}
	msg := func(num protowire.Number, parts ...[]byte) []byte {
		var body []byte
		for _, p := range parts {
			body = append(body, p...)
		}
		return protowire.AppendBytes(tag(num, protowire.BytesType), body)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	// Object.config_map(6) > ConfigMap.metadata(3) > ObjectMeta.name(1)
	cmNamed := func(name string) []byte { return msg(6, msg(3, str(1, name))) }
	// A varint 10 bytes long whose last byte carries bits beyond 64.
	overlong := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	for _, tc := range []struct {
		name     string
		data     []byte
		accepted bool // by the standard library
	}{
		{"plain", cmNamed("a"), true},
		{"name not UTF-8", cmNamed("a\xffb"), false},
		{"map key not UTF-8", msg(6, msg(4, str(1, "\xc0"), str(2, "v"))), false},
		{"map value not UTF-8", msg(6, msg(4, str(1, "k"), str(2, "\xed\xa0\x80"))), false},
		{"bytes need not be UTF-8", msg(7, msg(4, str(1, "k"), str(2, "\xff"))), true},
		{"over-long varint in a known field", msg(3, msg(3, cat(tag(6, protowire.VarintType), overlong))), false},
		{"over-long varint in an unknown field", cat(tag(100, protowire.VarintType), overlong), false},
		{"over-long packed varint", msg(3, msg(4, msg(17, protowire.AppendBytes(tag(4, protowire.BytesType), overlong)))), false},
		{"packed and unpacked varints", msg(3, msg(4, msg(17,
			protowire.AppendBytes(tag(4, protowire.BytesType), []byte{1, 2, 0x80, 1}),
			protowire.AppendVarint(tag(4, protowire.VarintType), 5)))), true},
		{"field number above the maximum", cat(tag(protowire.MaxValidNumber+1, protowire.VarintType), []byte{1}), false},
		{"field number wrapping to a known one", cat(protowire.AppendVarint(nil, (1<<32+6)<<3|2), []byte{0}), false},
		{"field number 0", []byte{0x02, 0x00}, false},
		{"over-long tag of an unknown field", []byte{0xf8, 0x00, 0x01}, true},
		{"over-long tag of a known field", cat([]byte{0xb2, 0x00}, cmNamed("a")[1:]), true},
		{"group ends with another number", cat(tag(100, protowire.StartGroupType), tag(101, protowire.EndGroupType)), false},
		{"group", cat(tag(100, protowire.StartGroupType), tag(1, protowire.VarintType), []byte{1}, tag(100, protowire.EndGroupType)), true},
		{"unterminated group", tag(100, protowire.StartGroupType), false},
		{"end group alone", tag(100, protowire.EndGroupType), false},
		{"wire type 6", []byte{0x0e}, false},
		{"known field, other wire type", msg(6, msg(3, cat(tag(1, protowire.VarintType), []byte{5}))), true},
		{"oneof field as varint", cat(tag(6, protowire.VarintType), []byte{1}), true},
		{"truncated", cmNamed("abc")[:5], false},
		{"length beyond the end", []byte{0x32, 0x10, 0x0a}, false},
		{"duplicate message merges", cat(cmNamed("a"), msg(6, msg(3, str(3, "ns")))), true},
		{"oneof switches kind", cat(cmNamed("a"), msg(3, msg(3, str(1, "p")))), true},
		{"duplicate map key", msg(6, msg(4, str(1, "k"), str(2, "1")), msg(4, str(1, "k"), str(2, "2"))), true},
		{"map entry without value", msg(6, msg(4, str(1, "k"))), true},
		{"map entry without key", msg(6, msg(4, str(2, "v"))), true},
		{"map entry, value first", msg(6, msg(4, str(2, "v"), str(1, "k"))), true},
		{"map key with another wire type", msg(6, msg(4, protowire.AppendFixed64(tag(1, protowire.Fixed64Type), 7), str(2, "v"))), true},
		{"map value with another wire type", msg(6, msg(4, str(1, "k"), protowire.AppendVarint(tag(2, protowire.VarintType), 5))), true},
		{"map entry with unknown field", msg(6, msg(4, str(1, "k"), str(2, "v"), str(9, "x"))), true},
		// Pod(3) > metadata(3) > creationTimestamp(7) with field 99.
		{"unknown field in a timestamp", msg(3, msg(3, msg(7, protowire.AppendVarint(tag(99, protowire.VarintType), 1)))), true},
		{"known field in a timestamp, other wire type", msg(3, msg(3, msg(7, str(1, "x")))), true},
		{"timestamp", msg(3, msg(3, msg(7, protowire.AppendVarint(tag(1, protowire.VarintType), 1e9)))), true},
		{"empty", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := &Object{}
			stdErr := gproto.Unmarshal(tc.data, want)
			if (stdErr == nil) != tc.accepted {
				t.Fatalf("the standard library: %v; the test expects accepted=%v", stdErr, tc.accepted)
			}
			got := Wrap(&Pod{Metadata: &ObjectMeta{Name: "left over"}})
			err := Unmarshal(tc.data, got)
			if (err == nil) != (stdErr == nil) {
				t.Fatalf("Unmarshal: %v; proto.Unmarshal: %v", err, stdErr)
			}
			if err == nil && !gproto.Equal(got, want) {
				t.Fatalf("Unmarshal decoded %v, proto.Unmarshal %v", got, want)
			}
		})
	}
}

// FuzzUnmarshal: on any input, Unmarshal accepts what gproto.Unmarshal
// accepts and decodes it to an equal command.
func FuzzUnmarshal(f *testing.F) {
	pod := loadPod(f)
	for _, o := range []*Object{pod, Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: "c", Labels: map[string]string{"a": "b"}},
		Data: map[string]string{"k": "v"}})} {
		for _, c := range []*Command{
			{Time: timestamppb.New(time.Unix(1e9, 5)), Uid: "u", Op: &Command_Create{Create: o}},
			{Op: &Command_Batch{Batch: &CommandBatch{Commands: []*Command{{Op: &Command_Update{Update: o}}}}}},
			{Op: &Command_Delete{Delete: &DeleteOp{Kind: "Pod", GracePeriodSeconds: gproto.Int64(math.MaxInt64)}}},
		} {
			b, err := gproto.Marshal(c)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want := &Command{}
		stdErr := gproto.Unmarshal(data, want)
		got := &Command{}
		err := Unmarshal(data, got)
		if (err == nil) != (stdErr == nil) {
			t.Fatalf("Unmarshal: %v; proto.Unmarshal: %v", err, stdErr)
		}
		if err == nil && !gproto.Equal(got, want) {
			t.Fatal("Unmarshal and proto.Unmarshal decoded different commands")
		}
	})
}

// An EncodedListResponse is written as the ListResponse it stands for:
// receivers decode a ListResponse equal to the one with decoded items, for
// small messages and for large (pooled) ones alike.
func TestGRPCCodecEncodedList(t *testing.T) {
	codec := GRPCCodec()
	pod := loadPod(t)
	for _, tc := range []struct {
		name  string
		items int
		rv    uint64
	}{{"empty", 0, 7}, {"no version", 2, 0}, {"one", 1, 42}, {"pooled", 300, 1 << 40}} {
		t.Run(tc.name, func(t *testing.T) {
			want := &ListResponse{ResourceVersion: tc.rv}
			enc := &EncodedListResponse{ResourceVersion: tc.rv}
			for i := range tc.items {
				o := pod.Clone()
				o.Meta().Name = strings.Repeat("p", i%7+1)
				o.Meta().Labels = map[string]string{"a": "1", "b": "2", "c": "3"}
				b, err := gproto.MarshalOptions{Deterministic: true}.Marshal(o)
				if err != nil {
					t.Fatal(err)
				}
				want.Items = append(want.Items, o)
				enc.Items = append(enc.Items, b)
			}
			data, err := codec.Marshal(enc)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "pooled" && mem.IsBelowBufferPoolingThreshold(data.Len()) {
				t.Fatalf("%d bytes: the case needs a pooled buffer", data.Len())
			}
			got := &ListResponse{}
			if err := codec.Unmarshal(data, got); err != nil {
				t.Fatal(err)
			}
			data.Free()
			if !gproto.Equal(got, want) {
				t.Fatalf("decoded %v\nwant %v", got, want)
			}
			if n := gproto.Size(want); n != enc.wireSize() {
				t.Fatalf("size %d, the ListResponse's %d", enc.wireSize(), n)
			}
		})
	}
}

// An EncodedWatchEvent is written as the WatchEvent it stands for.
func TestGRPCCodecEncodedWatchEvent(t *testing.T) {
	codec := GRPCCodec()
	pod := loadPod(t)
	raw, err := gproto.MarshalOptions{Deterministic: true}.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		enc  *EncodedWatchEvent
		want *WatchEvent
	}{
		{&EncodedWatchEvent{Type: "ADDED", Object: raw, ResourceVersion: 9}, &WatchEvent{Type: "ADDED", Object: pod, ResourceVersion: 9}},
		{&EncodedWatchEvent{Type: "BOOKMARK", ResourceVersion: 1 << 50}, &WatchEvent{Type: "BOOKMARK", ResourceVersion: 1 << 50}},
		{&EncodedWatchEvent{Object: raw}, &WatchEvent{Object: pod}},
	} {
		data, err := codec.Marshal(tc.enc)
		if err != nil {
			t.Fatal(err)
		}
		got := &WatchEvent{}
		if err := codec.Unmarshal(data, got); err != nil {
			t.Fatal(err)
		}
		if !gproto.Equal(got, tc.want) || gproto.Size(tc.want) != tc.enc.wireSize() {
			t.Fatalf("decoded %v (size %d), want %v (size %d)", got, tc.enc.wireSize(), tc.want, gproto.Size(tc.want))
		}
	}
}
