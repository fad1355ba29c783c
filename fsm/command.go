package fsm

import (
	"errors"
	"fmt"

	pb "github.com/skiff-sh/skiff/proto"
)

// commandVersion is the first byte of every log entry. A master that meets a
// version it does not know rejects the entry rather than guessing, so a
// format change needs a new version and an upgrade path, never a silent
// reinterpretation.
const commandVersion byte = 1

// EncodeCommand serialises a command for raft.Apply.
func EncodeCommand(cmd *pb.Command) ([]byte, error) {
	if cmd == nil {
		return nil, errors.New("fsm: encode command: nil command")
	}
	// Deterministic (pb.Marshal writes map entries in key order) so that
	// equal commands are equal log entries.
	b, err := pb.MarshalAppend([]byte{commandVersion}, cmd)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode command: %w", err)
	}
	return b, nil
}

// DecodeCommand parses a command from a Raft log entry. Errors wrap
// ErrInvalid.
func DecodeCommand(b []byte) (*pb.Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: decode command: empty entry", ErrInvalid)
	}
	if b[0] != commandVersion {
		return nil, fmt.Errorf("%w: decode command: unknown format version %d", ErrInvalid, b[0])
	}
	// pb.Unmarshal decodes with the generated vtprotobuf code (every master
	// decodes every entry, so it is on the write path's critical CPU) and
	// accepts and produces exactly what gproto.Unmarshal does: masters that
	// decoded an entry differently would diverge.
	cmd := &pb.Command{}
	if err := pb.Unmarshal(b[1:], cmd); err != nil {
		return nil, fmt.Errorf("%w: decode command: %v", ErrInvalid, err)
	}
	return cmd, nil
}
