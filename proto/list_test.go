package proto

import (
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// chunks replays List messages, then ends with end (io.EOF for a clean end).
type chunks struct {
	msgs []*ListResponse
	end  error
}

func (c *chunks) Recv() (*ListResponse, error) {
	if len(c.msgs) == 0 {
		return nil, c.end
	}
	m := c.msgs[0]
	c.msgs = c.msgs[1:]
	return m, nil
}

func TestCollectList(t *testing.T) {
	cm := func(name string) *Object { return Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: name}}) }
	broken := status.Error(codes.Unavailable, "connection reset")
	for _, tc := range []struct {
		name      string
		stream    *chunks
		openErr   error
		wantNames []string
		wantRV    uint64
		wantCode  codes.Code
	}{
		{name: "chunks in order", stream: &chunks{msgs: []*ListResponse{
			{Items: []*Object{cm("a"), cm("b")}, ResourceVersion: 9},
			{Items: []*Object{cm("c")}, ResourceVersion: 9},
		}, end: io.EOF}, wantNames: []string{"a", "b", "c"}, wantRV: 9},
		{name: "empty answer", stream: &chunks{msgs: []*ListResponse{{ResourceVersion: 4}}, end: io.EOF}, wantRV: 4},
		{name: "broken part way", stream: &chunks{msgs: []*ListResponse{{Items: []*Object{cm("a")}, ResourceVersion: 9}}, end: broken},
			wantCode: codes.Unavailable},
		{name: "no chunk at all", stream: &chunks{end: io.EOF}, wantCode: codes.Unavailable},
		{name: "chunks of two snapshots", stream: &chunks{msgs: []*ListResponse{
			{Items: []*Object{cm("a")}, ResourceVersion: 9},
			{Items: []*Object{cm("b")}, ResourceVersion: 10},
		}, end: io.EOF}, wantCode: codes.Internal},
		{name: "the call did not open", stream: nil, openErr: broken, wantCode: codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s ListChunks
			if tc.stream != nil {
				s = tc.stream
			}
			resp, err := CollectList(s, tc.openErr)
			if tc.wantCode != codes.OK {
				if status.Code(err) != tc.wantCode || resp != nil {
					t.Fatalf("CollectList = %v, %v; want nothing and code %s", resp, err, tc.wantCode)
				}
				if tc.openErr != nil && !errors.Is(err, tc.openErr) {
					t.Fatalf("error %v, want the call's own %v", err, tc.openErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, o := range resp.GetItems() {
				names = append(names, o.Meta().GetName())
			}
			if resp.GetResourceVersion() != tc.wantRV || len(names) != len(tc.wantNames) {
				t.Fatalf("CollectList = %v at %d, want %v at %d", names, resp.GetResourceVersion(), tc.wantNames, tc.wantRV)
			}
			for i := range names {
				if names[i] != tc.wantNames[i] {
					t.Fatalf("CollectList = %v, want %v", names, tc.wantNames)
				}
			}
		})
	}
}
