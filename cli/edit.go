package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"reflect"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	"github.com/skiff-sh/skiff/client"

	pb "github.com/skiff-sh/skiff/proto"
)

// editHeader is kubectl edit's, word for word, so that people who know
// kubectl know what to do.
const editHeader = `Please edit the object below. Lines beginning with a '#' will be ignored,
and an empty file will abort the edit. If an error occurs while saving this file will be
reopened with the relevant failures.`

// editAttempts bounds how often an edit is carried over onto a version of
// the object written meanwhile (a controller writing status, say).
const editAttempts = 5

func newEditCommand(o *Options) *cobra.Command {
	var sel selection
	var output string
	cmd := &cobra.Command{
		Use:   "edit (KIND NAME... | KIND/NAME... | KIND -l SELECTOR | KIND --all)",
		Short: "Edit objects in your editor and save them to the cluster",
		Long: `Edit opens an object in an editor as skiff get -o yaml prints it (-o json for JSON), and writes
what you save back to the cluster, as kubectl edit does.

The editor is $SKIFF_EDITOR, else $EDITOR, else vi. The command may have arguments
(EDITOR="code --wait"); one with spaces, quotes or other shell characters is run by /bin/sh,
with the file's path as its last argument, as git runs its editor. vi needs a terminal: without
$SKIFF_EDITOR or $EDITOR, and with standard input not a terminal, edit fails and says so. Ctrl-C
belongs to the editor while it runs; --request-timeout bounds each call to the cluster, not the
time spent in the editor.

Saving the file unchanged, or with nothing but comments, cancels the edit. Otherwise the object is
decoded as apply decodes manifests (an unknown field or a value of the wrong type is an error
that names the field), checked, and written as an update of its spec (or data) and its labels,
annotations, finalizers and ownerReferences. Its status is shown but not written: the
controllers and workers own it. kind, apiVersion, metadata.name and metadata.namespace cannot
be changed; the other metadata the cluster sets (uid, resourceVersion, generation, timestamps)
is taken from the object as it was read, whatever the file says.

If the object cannot be saved, the editor opens again with the errors as comments at the top
and your changes below. Saving that file unchanged, or empty, gives up: the last error is
printed with the path of a copy of your changes, and the command fails.

The update carries the resourceVersion the object had when it was read, so a change made by
someone else meanwhile is never overwritten unseen. If that happens, your edit is carried over
onto the current version when the two touch different fields (a list counts as one field, and
changes to status do not count), and written with the current resourceVersion. If both changed
a field, nothing is written and the editor opens again, naming the fields, their value when
read, now, and in your edit. Then set those fields back to their value when read and save, to
keep the other change and write the rest of yours; or quit without saving and run skiff edit
again, to edit the current version (the copy of your changes is kept).

Several objects are edited one after the other, each in its own editor session, read just
before its editor opens; an edit cancelled or failed does not stop the next.`,
		Example: `  skiff edit deployment/web
  skiff edit configmap settings -n demo
  skiff edit deploy web -o json
  EDITOR="code --wait" skiff edit svc/web
  skiff edit configmaps -l app=web        # each in turn`,
		ValidArgsFunction: completeKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "yaml", "json":
			default:
				return fmt.Errorf("--output %q: use yaml or json", output)
			}
			if _, _, err := sel.plan(args, "edit"); err != nil {
				return err
			}
			editor, err := findEditor(o.In, os.Getenv)
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := o.context()
			keys, err := sel.resolve(ctx, c, args, "edit")
			cancel()
			if err != nil {
				return err
			}
			s := &editSession{o: o, c: c, format: output, editor: editor}
			return s.editAll(keys)
		},
	}
	sel.addFlags(cmd, true)
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "the format to edit in: yaml or json")
	return cmd
}

// findEditor returns the command line of the editor to run: $SKIFF_EDITOR,
// $EDITOR, or vi, which needs a terminal.
func findEditor(in io.Reader, getenv func(string) string) (string, error) {
	for _, v := range []string{"SKIFF_EDITOR", "EDITOR"} {
		if e := strings.TrimSpace(getenv(v)); e != "" {
			return e, nil
		}
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("no editor: $SKIFF_EDITOR and $EDITOR are not set and standard input is not a terminal for vi; " +
			`set EDITOR to the command of your editor (EDITOR=nano, EDITOR="code --wait")`)
	}
	return "vi", nil
}

// shellChars are the characters that make git run its editor through the
// shell: with none, the command is one program's path.
const shellChars = "|&;<>()$`\\\"' \t\n*?[#~=%"

// editorArgv is the command that opens path in editor: the program itself,
// or /bin/sh for a command line with arguments, quotes or other shell
// syntax, split as the shell splits it.
func editorArgv(editor, path string) []string {
	if !strings.ContainsAny(editor, shellChars) {
		return []string{editor, path}
	}
	if _, err := exec.LookPath("sh"); err != nil {
		// No shell (not a Unix system): plain words.
		return append(strings.Fields(editor), path)
	}
	return []string{"sh", "-c", editor + ` "$@"`, editor, path}
}

// runEditor runs the editor on path and waits for it. Ctrl-C is left to
// the editor meanwhile (vi uses it), as git does.
func (s *editSession) runEditor(path string) error {
	argv := editorArgv(s.editor, path)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s.o.In, s.o.Out, s.o.ErrOut
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist),
		errors.As(err, &exit) && exit.ExitCode() == 127 && argv[0] == "sh":
		return fmt.Errorf("editor %q not found: set SKIFF_EDITOR or EDITOR to the command of your editor", s.editor)
	}
	return fmt.Errorf("the editor %q failed: %w", s.editor, err)
}

// editClient is what edit needs of *client.Client; tests pass a fake.
type editClient interface {
	Get(ctx context.Context, kind, namespace, name string, opts client.ReadOptions) (*pb.Object, error)
	Update(ctx context.Context, obj *pb.Object) (*pb.WriteResponse, error)
}

// editSession edits objects one after the other.
type editSession struct {
	o      *Options
	c      editClient
	format string // yaml or json
	editor string // the command line of the editor
}

// editAll edits each object in turn. With one object its error is
// returned as is; with several, each failure is printed and the rest go
// on.
func (s *editSession) editAll(keys []objectKey) error {
	failed := 0
	for _, k := range keys {
		err := s.editObject(k)
		if err == nil {
			continue
		}
		if len(keys) == 1 {
			return err
		}
		failed++
		fmt.Fprintf(s.o.ErrOut, "error: %v\n", err)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d objects were not edited", failed, len(keys))
	}
	return nil
}

// editObject reads one object, opens it in the editor until what is saved
// is written, the user gives up, or an error that another try cannot fix.
func (s *editSession) editObject(k objectKey) error {
	ctx, cancel := s.o.context()
	read, err := s.c.Get(ctx, k.kind.Kind, k.namespace, k.name, client.ReadOptions{})
	cancel()
	if err != nil {
		return apiError(k.notFound(err))
	}
	ref := objectRef(read)
	text, err := s.render(read)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", "skiff-edit-*."+s.format)
	if err != nil {
		return fmt.Errorf("create the file to edit: %w", err)
	}
	path := f.Name()
	f.Close()
	keep := false
	defer func() {
		if keep {
			fmt.Fprintf(s.o.ErrOut, "A copy of your changes has been stored to %q\n", path)
			return
		}
		os.Remove(path)
	}()
	presented := append(commentHeader(nil), text...)
	var lastErr error // the error shown at the top of the file
	for {
		if err := os.WriteFile(path, presented, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := s.runEditor(path); err != nil {
			keep = true
			return fmt.Errorf("%s was not edited: %w", ref, err)
		}
		saved, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		content := stripComments(saved, s.format, false)
		unchanged := bytes.Equal(content, stripComments(presented, s.format, false))
		empty := len(bytes.TrimSpace(content)) == 0
		if empty {
			fmt.Fprintln(s.o.ErrOut, "Edit cancelled, saved file was empty.")
		}
		if lastErr != nil && (unchanged || empty) {
			if empty {
				// Keep what was last tried, not the empty file.
				if err := os.WriteFile(path, presented, 0o600); err != nil {
					return fmt.Errorf("write %s: %w", path, err)
				}
			}
			keep = true
			return fmt.Errorf("%s was not edited: %w", ref, lastErr)
		}
		if empty {
			return nil
		}
		if unchanged {
			fmt.Fprintln(s.o.ErrOut, "Edit cancelled, no changes made.")
			return nil
		}
		resp, err := s.save(read, stripComments(saved, s.format, true))
		switch {
		case errors.Is(err, errNoChange):
			fmt.Fprintf(s.o.ErrOut, "Edit cancelled, no changes made%s.\n", strings.TrimPrefix(err.Error(), errNoChange.Error()))
			return nil
		case err == nil:
			fmt.Fprintf(s.o.Out, "%s %s\n", objectRef(resp.GetObject()), editedWord(resp.GetAction()))
			return nil
		case !fixable(err):
			if err := os.WriteFile(path, content, 0o600); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			keep = true
			return fmt.Errorf("%s was not edited: %s", ref, errMessage(err))
		}
		lastErr = err
		fmt.Fprintf(s.o.ErrOut, "error: %s was not saved: %s\n", ref, errMessage(err))
		fmt.Fprintln(s.o.ErrOut, "Reopening the editor with the errors at the top of the file.")
		presented = append(commentHeader(fileComment(ref, err)), content...)
	}
}

// render prints obj as the editor shows it: skiff get -o yaml's YAML, or
// its JSON indented.
func (s *editSession) render(obj *pb.Object) ([]byte, error) {
	if s.format == "yaml" {
		return pb.EncodeYAML(obj)
	}
	return indentJSON(pb.EncodeJSON(obj))
}

// commentHeader is kubectl's header, then any error lines, as comments.
func commentHeader(errLines []string) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(editHeader, "\n") {
		b.WriteString("# " + l + "\n")
	}
	b.WriteString("#\n")
	if len(errLines) > 0 {
		for _, l := range errLines {
			for _, ll := range strings.Split(l, "\n") {
				b.WriteString(strings.TrimRight("# "+ll, " ") + "\n")
			}
		}
		b.WriteString("#\n")
	}
	return b.Bytes()
}

func bulleted(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = "* " + strings.ReplaceAll(l, "\n", "\n  ")
	}
	return out
}

// stripComments removes the comment lines edit writes and kubectl's rule
// ignores. In YAML only lines with '#' in the first column go: YAML ignores
// indented comments by itself, and an indented '#' line may be content (a
// script in a ConfigMap's block scalar). JSON has neither, so any line
// whose first non-blank character is '#' goes. With blank set, comment
// lines become empty lines instead, so that the decoder's line numbers are
// those of the file as saved.
func stripComments(data []byte, format string, blank bool) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		probe := line
		if format == "json" {
			probe = bytes.TrimLeft(line, " \t")
		}
		if !bytes.HasPrefix(probe, []byte("#")) {
			out = append(out, line...)
		} else if blank && bytes.HasSuffix(line, []byte("\n")) {
			out = append(out, '\n')
		}
	}
	return out
}

// invalidEdit is a problem with what the user saved: reopening the editor
// lets them fix it. The file shows title (if any) after "was not saved:",
// each line as a bullet, then footer.
type invalidEdit struct {
	title  string
	lines  []string
	footer string
}

func (e *invalidEdit) Error() string {
	msg := strings.Join(e.lines, "; ")
	if e.title != "" {
		msg = e.title + " " + msg
	}
	if e.footer != "" {
		msg += ". " + e.footer
	}
	return msg
}

// fileComment is how err heads the reopened file.
func fileComment(ref string, err error) []string {
	var ie *invalidEdit
	if !errors.As(err, &ie) {
		ie = &invalidEdit{lines: strings.Split(errMessage(err), "\n")}
	}
	first := ref + " was not saved:"
	if ie.title != "" {
		first += " " + ie.title
	}
	out := append([]string{first}, bulleted(ie.lines)...)
	if ie.footer != "" {
		out = append(out, ie.footer+".")
	}
	return out
}

// errNoChange is returned by save when the edit changes nothing that an
// update writes; what follows its text in the error says why.
var errNoChange = errors.New("no change")

// fixable tells the errors a change to the file may fix from those it
// cannot (the object is gone, the cluster is unreachable, an outcome is
// unknown).
func fixable(err error) bool {
	var ie *invalidEdit
	if errors.As(err, &ie) {
		return true
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted, codes.AlreadyExists:
		return true
	}
	return false
}

// editedWord is what edit prints for the store's action.
func editedWord(action string) string {
	switch action {
	case "deleted":
		return "edited and deleted (no finalizers remain)"
	case "unchanged":
		return "unchanged"
	}
	return "edited"
}

// save decodes what the user saved, checks it against the object as it
// was read, and writes it.
func (s *editSession) save(read *pb.Object, content []byte) (*pb.WriteResponse, error) {
	edited, err := decodeEdited(content, read)
	if err != nil {
		return nil, err
	}
	base, err := objectTree(read)
	if err != nil {
		return nil, err
	}
	mine, err := objectTree(edited)
	if err != nil {
		return nil, err
	}
	if reflect.DeepEqual(writtenPart(base), writtenPart(mine)) {
		if !reflect.DeepEqual(base["status"], mine["status"]) {
			return nil, fmt.Errorf("%w (changes to status are not saved: the cluster's controllers and workers write it)", errNoChange)
		}
		return nil, errNoChange
	}
	ctx, cancel := s.o.context()
	defer cancel()
	obj := edited
	for attempt := 1; ; attempt++ {
		resp, err := s.c.Update(ctx, obj)
		if status.Code(err) != codes.Aborted || attempt == editAttempts {
			return resp, err
		}
		m := read.Meta()
		cur, gerr := s.c.Get(ctx, read.KindName(), m.GetNamespace(), m.GetName(), client.ReadOptions{})
		if gerr != nil {
			return nil, gerr
		}
		if obj, err = carryOver(read, base, mine, cur); err != nil {
			return nil, err
		}
	}
}

// decodeEdited decodes the saved file strictly, as apply does, into the
// object to write: it must be the object read, and valid. uid and
// resourceVersion are those read, so the update fails rather than
// overwrite a change made meanwhile.
func decodeEdited(content []byte, read *pb.Object) (*pb.Object, error) {
	// The object's identity first: a changed kind would otherwise be
	// reported as the fields the other kind lacks.
	if lines := identityChanges(content, read); len(lines) > 0 {
		return nil, &invalidEdit{lines: lines}
	}
	mos, err := pb.DecodeManifestObjects(content)
	if err != nil {
		return nil, &invalidEdit{lines: decodeErrorLines(err)}
	}
	if len(mos) != 1 {
		return nil, &invalidEdit{lines: []string{fmt.Sprintf("the file holds %d objects: keep exactly the one being edited, %s", len(mos), objectRef(read))}}
	}
	obj := mos[0].Object
	m, rm := obj.Meta(), read.Meta()
	if m.GetNamespace() == "" {
		m.Namespace = rm.GetNamespace()
	}
	m.Uid, m.ResourceVersion = rm.GetUid(), rm.GetResourceVersion()
	check := obj.Clone()
	pb.SetDefaults(check)
	if err := pb.ValidateWithLimit(check, 0); err != nil {
		var ve *pb.ValidationError
		if !errors.As(err, &ve) {
			return nil, &invalidEdit{lines: []string{err.Error()}}
		}
		var lines []string
		for _, fe := range ve.Errors {
			lines = append(lines, fe.Error())
		}
		return nil, &invalidEdit{lines: lines}
	}
	return obj, nil
}

// identityChanges lists changes to what names the object: kind,
// apiVersion, metadata.name and metadata.namespace (an empty namespace is
// the one read). It looks at the first document only, and finds nothing
// in a file that does not parse: the decoder reports that.
func identityChanges(content []byte, read *pb.Object) []string {
	j, err := yaml.YAMLToJSON(content)
	if err != nil {
		return nil
	}
	var top struct {
		APIVersion any `json:"apiVersion"`
		Kind       any `json:"kind"`
		Metadata   struct {
			Name      any `json:"name"`
			Namespace any `json:"namespace"`
		} `json:"metadata"`
	}
	if json.Unmarshal(j, &top) != nil {
		return nil
	}
	info, _ := pb.LookupKind(read.KindName())
	rm := read.Meta()
	var lines []string
	check := func(path string, got any, want string) {
		if s, ok := got.(string); !ok || s != want {
			lines = append(lines, fmt.Sprintf("%s: Invalid value: %s: cannot be changed from %q", path, shortValue(got, got != nil), want))
		}
	}
	check("apiVersion", top.APIVersion, info.APIVersion)
	check("kind", top.Kind, read.KindName())
	check("metadata.name", top.Metadata.Name, rm.GetName())
	if top.Metadata.Namespace != nil || rm.GetNamespace() == "" {
		ns := top.Metadata.Namespace
		if ns == nil {
			ns = ""
		}
		check("metadata.namespace", ns, rm.GetNamespace())
	}
	return lines
}

// decodeErrorLines lists the problems DecodeManifestObjects found, one a
// line, without the document prefix (the file holds one object).
func decodeErrorLines(err error) []string {
	errs := []error{err}
	if _, one := err.(*pb.DocumentError); !one {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
	}
	var lines []string
	for _, e := range errs {
		var de *pb.DocumentError
		if !errors.As(e, &de) {
			lines = append(lines, e.Error())
			continue
		}
		if de.Err != nil {
			lines = append(lines, de.Err.Error())
		}
		for _, fe := range de.Errors {
			lines = append(lines, fe.Error())
		}
	}
	return lines
}

// ---- carrying an edit over onto a newer version ----
//
// Objects are compared as their JSON trees (maps, lists and scalars as
// encoding/json reads them). A field is a path of map keys; a list is one
// field, compared whole, because its items have no stable identity here.

// objectTree is obj as a JSON tree.
func objectTree(obj *pb.Object) (map[string]any, error) {
	data, err := pb.EncodeJSON(obj)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var t map[string]any
	if err := d.Decode(&t); err != nil {
		return nil, err
	}
	return t, nil
}

// writtenMeta are the metadata fields an update writes.
var writtenMeta = []string{"labels", "annotations", "ownerReferences", "finalizers"}

// writtenPart is the part of an object's tree an update writes: everything
// but apiVersion, kind and status (the spec, or a ConfigMap's data), and
// of metadata the fields in writtenMeta. metadata is always there, so that
// its fields compare one by one.
func writtenPart(t map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range t {
		switch k {
		case "apiVersion", "kind", "metadata", "status":
			continue
		}
		out[k] = v
	}
	md := map[string]any{}
	if m, ok := t["metadata"].(map[string]any); ok {
		for _, k := range writtenMeta {
			if v, ok := m[k]; ok {
				md[k] = v
			}
		}
	}
	out["metadata"] = md
	return out
}

// changedPaths returns the fields where a and b differ: a key in only one
// of them, or values that differ and are not both maps.
func changedPaths(a, b map[string]any, prefix []string) [][]string {
	var out [][]string
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := append(slices.Clip(prefix), k)
		av, aok := a[k]
		bv, bok := b[k]
		am, amap := av.(map[string]any)
		bm, bmap := bv.(map[string]any)
		switch {
		case aok && bok && amap && bmap:
			out = append(out, changedPaths(am, bm, p)...)
		case !aok || !bok || !reflect.DeepEqual(av, bv):
			out = append(out, p)
		}
	}
	return out
}

// overlaps reports whether fields p and q are the same, or one holds the
// other.
func overlaps(p, q []string) bool {
	n := min(len(p), len(q))
	return slices.Equal(p[:n], q[:n])
}

func lookupPath(t map[string]any, p []string) (any, bool) {
	var v any = t
	for _, k := range p {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// setPath sets field p of t to v, or removes it when present is false. The
// maps above p exist: carryOver only sets fields no one else changed, so
// their parents are as they were read.
func setPath(t map[string]any, p []string, v any, present bool) {
	m := t
	for _, k := range p[:len(p)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	if present {
		m[p[len(p)-1]] = v
	} else {
		delete(m, p[len(p)-1])
	}
}

// fieldName writes a path as the error messages do:
// metadata.labels[app.kubernetes.io/name].
func fieldName(p []string) string {
	var b strings.Builder
	for i, k := range p {
		switch {
		case strings.ContainsAny(k, "./[]"):
			b.WriteString("[" + k + "]")
		case i > 0:
			b.WriteString("." + k)
		default:
			b.WriteString(k)
		}
	}
	return b.String()
}

// shortValue prints a field's value for a message: JSON, cut short.
func shortValue(v any, present bool) string {
	if !present {
		return "(not set)"
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if s := string(data); len(s) <= 80 {
		return s
	}
	return string(data[:77]) + "..."
}

// carryOver makes the user's edit (base to mine, as trees) to cur, the
// version of the object written since it was read, when no field the edit
// changes was changed meanwhile; otherwise it returns an invalidEdit
// naming the fields both changed. Status and the metadata the cluster
// sets are not compared: an update does not write them.
func carryOver(read *pb.Object, base, mine map[string]any, cur *pb.Object) (*pb.Object, error) {
	ref := objectRef(read)
	if cur.Meta().GetUid() != read.Meta().GetUid() {
		return nil, &invalidEdit{lines: []string{fmt.Sprintf(
			"%s was deleted and created again since it was read (uid %s, now %s): nothing was written; quit without saving changes and run skiff edit again to edit the new object",
			ref, read.Meta().GetUid(), cur.Meta().GetUid())}}
	}
	theirs, err := objectTree(cur)
	if err != nil {
		return nil, err
	}
	wb := writtenPart(base)
	edits := changedPaths(wb, writtenPart(mine), nil)
	changed := changedPaths(wb, writtenPart(theirs), nil)
	var both []string
	for _, p := range edits {
		for _, q := range changed {
			if !overlaps(p, q) {
				continue
			}
			f := p
			if len(q) < len(p) {
				f = q
			}
			was, wasOK := lookupPath(base, f)
			now, nowOK := lookupPath(theirs, f)
			yours, yoursOK := lookupPath(mine, f)
			both = append(both, fmt.Sprintf("%s: %s when read, now %s, yours %s",
				fieldName(f), shortValue(was, wasOK), shortValue(now, nowOK), shortValue(yours, yoursOK)))
		}
	}
	if len(both) > 0 {
		slices.Sort(both)
		both = slices.Compact(both)
		return nil, &invalidEdit{
			title: fmt.Sprintf("Conflict: it was changed by someone else since it was read (resourceVersion %d, now %d), in fields your edit changes too:",
				read.Meta().GetResourceVersion(), cur.Meta().GetResourceVersion()),
			lines: both,
			footer: "Nothing was written. To keep their values and write the rest of your edit, set these fields back to their value when read and save; " +
				"to edit the current version, quit without saving and run skiff edit again",
		}
	}
	for _, p := range edits {
		v, ok := lookupPath(mine, p)
		setPath(theirs, p, v, ok)
	}
	data, err := json.Marshal(theirs)
	if err != nil {
		return nil, err
	}
	obj, err := pb.DecodeObject(data)
	if err != nil {
		return nil, fmt.Errorf("carry the edit over onto %s's current version: %w", ref, err)
	}
	return obj, nil
}
