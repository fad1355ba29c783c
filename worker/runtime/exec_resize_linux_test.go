package runtime

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/worker/internal/testimage"
)

// TestExecTTYSize checks an exec'd process's terminal gets ExecIO.Size and
// follows ExecIO.Resize.
func TestExecTTYSize(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-resize", SandboxOptions{})
	id := e.start(t, sb, app("target", "sleep", "1h"))
	ctx := ctxFor(t, 60*time.Second)

	var out bytes.Buffer
	code, err := e.rt.Exec(ctx, id, []string{testimage.AppPath, "winsize"}, ExecIO{Stdout: &out, Size: TerminalSize{Width: 132, Height: 43}}, true)
	if err != nil || code != 0 || !strings.Contains(out.String(), "size=132x43") {
		t.Fatalf("exec with a size = %d %q %v", code, out.String(), err)
	}

	// The process looks at its terminal after the resize was sent.
	out.Reset()
	resize := make(chan TerminalSize, 1)
	resize <- TerminalSize{Width: 100, Height: 30}
	code, err = e.rt.Exec(ctx, id, []string{testimage.AppPath, "sleep", "500ms", "winsize"}, ExecIO{Stdout: &out, Resize: resize}, true)
	if err != nil || code != 0 || !strings.Contains(out.String(), "size=100x30") {
		t.Fatalf("exec after a resize = %d %q %v", code, out.String(), err)
	}
}
