package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/validate/content"

	pb "github.com/skiff-sh/skiff/proto"
)

// taintEffects are the effects a taint may have, as Kubernetes names them.
var taintEffects = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}

// taintEdit is what one taint command changes on each node: taints to add
// (or, with --overwrite, to give a new value) and taints to remove, an
// empty effect removing every taint with the key.
type taintEdit struct {
	add    []*pb.Taint
	remove []*pb.Taint
}

// isTaintChange tells KEY[=VALUE]:EFFECT and KEY[:EFFECT]- from a node's
// name, as kubectl does.
func isTaintChange(a string) bool {
	return strings.ContainsAny(a, "=:") || strings.HasSuffix(a, "-")
}

// taintString is a taint as the command line writes it.
func taintString(t *pb.Taint) string {
	s := t.GetKey()
	if t.GetValue() != "" {
		s += "=" + t.GetValue()
	}
	if t.GetEffect() != "" {
		s += ":" + t.GetEffect()
	}
	return s
}

// parseTaint reads KEY[=VALUE][:EFFECT], checking the key, value and effect
// by Kubernetes' rules.
func parseTaint(spec string) (*pb.Taint, error) {
	kv, effect, hasEffect := strings.Cut(spec, ":")
	key, value, _ := strings.Cut(kv, "=")
	switch {
	case strings.Contains(effect, ":") || strings.Contains(value, "="):
		return nil, fmt.Errorf("invalid taint spec %q: want KEY[=VALUE]:EFFECT", spec)
	case hasEffect && !slices.Contains(taintEffects, effect):
		return nil, fmt.Errorf("invalid taint effect %q in %q: use %s", effect, spec, strings.Join(taintEffects, ", "))
	}
	if msgs := content.IsLabelKey(key); len(msgs) > 0 {
		return nil, fmt.Errorf("invalid taint key %q in %q: %s", key, spec, strings.Join(msgs, "; "))
	}
	if msgs := content.IsLabelValue(value); len(msgs) > 0 {
		return nil, fmt.Errorf("invalid taint value %q in %q: %s", value, spec, strings.Join(msgs, "; "))
	}
	return &pb.Taint{Key: key, Value: value, Effect: effect}, nil
}

// parseTaintEdit reads the taint arguments: KEY[=VALUE]:EFFECT adds,
// KEY:EFFECT- removes the taint with that key and effect, KEY- every taint
// with the key.
func parseTaintEdit(args []string) (taintEdit, error) {
	var e taintEdit
	if len(args) == 0 {
		return e, errors.New("give at least one taint: KEY[=VALUE]:EFFECT to add, KEY:EFFECT- or KEY- to remove")
	}
	var errs []string
	for _, a := range args {
		spec, remove := strings.CutSuffix(a, "-")
		t, err := parseTaint(spec)
		switch {
		case err != nil:
			errs = append(errs, err.Error())
		case remove:
			e.remove = append(e.remove, &pb.Taint{Key: t.Key, Effect: t.Effect})
		case t.Effect == "":
			errs = append(errs, fmt.Sprintf("taint %q has no effect: add one, as in %s:NoSchedule (effects: %s)", a, a, strings.Join(taintEffects, ", ")))
		default:
			for _, prev := range e.add {
				if prev.Key == t.Key && prev.Effect == t.Effect {
					errs = append(errs, fmt.Sprintf("taint %s:%s is given twice: give each key and effect once", t.Key, t.Effect))
				}
			}
			e.add = append(e.add, t)
		}
	}
	var both []string
	for _, add := range e.add {
		for _, rm := range e.remove {
			if add.Key == rm.Key && (rm.Effect == "" || rm.Effect == add.Effect) {
				both = append(both, taintString(rm))
			}
		}
	}
	if len(both) > 0 {
		errs = append(errs, "can not both modify and remove the following taint(s) in the same command: "+strings.Join(both, ", "))
	}
	if len(errs) > 0 {
		return taintEdit{}, errors.New(strings.Join(errs, "\n"))
	}
	return e, nil
}

// applyTaints makes e's changes to node's taints and returns the word to
// print ("tainted", "untainted", "modified", "unchanged") and whether
// anything changed. A taint whose key and effect the node has already
// is an error without overwrite (with it, its value is replaced in
// place); removing a taint the node does not have is an error. Nothing
// changes on an error.
func applyTaints(node *pb.Node, e taintEdit, overwrite bool) (string, bool, error) {
	name := node.GetMetadata().GetName()
	cur := node.GetSpec().GetTaints()
	index := func(key, effect string) int {
		return slices.IndexFunc(cur, func(t *pb.Taint) bool { return t.GetKey() == key && t.GetEffect() == effect })
	}
	if !overwrite {
		var have []string
		for _, t := range e.add {
			if index(t.Key, t.Effect) >= 0 && !slices.Contains(have, t.Key) {
				have = append(have, t.Key)
			}
		}
		if len(have) > 0 {
			return "", false, fmt.Errorf("node %s already has %s taint(s) with same effect(s) and --overwrite is false", name, strings.Join(have, ","))
		}
	}
	next := make([]*pb.Taint, len(cur))
	for i, t := range cur {
		next[i] = t.CloneVT()
	}
	added, replaced, removed := false, false, false
	for _, t := range e.add {
		if i := index(t.Key, t.Effect); i >= 0 {
			if next[i].GetValue() != t.Value {
				next[i].Value = t.Value
				replaced = true
			}
			continue
		}
		next = append(next, t.CloneVT())
		added = true
	}
	for _, rm := range e.remove {
		n := len(next)
		next = slices.DeleteFunc(next, func(t *pb.Taint) bool {
			return t.GetKey() == rm.Key && (rm.Effect == "" || t.GetEffect() == rm.Effect)
		})
		if len(next) == n {
			var has []string
			for _, t := range cur {
				has = append(has, taintString(t))
			}
			what := "no taints"
			if len(has) > 0 {
				what = "taints " + strings.Join(has, ", ")
			}
			return "", false, fmt.Errorf("taint %q not found: node %s has %s", taintString(rm), name, what)
		}
		removed = true
	}
	var word string
	switch {
	case !added && !replaced && !removed:
		return "unchanged", false, nil
	case added && !replaced && !removed:
		word = "tainted"
	case removed && !added && !replaced:
		word = "untainted"
	default:
		word = "modified"
	}
	if node.Spec == nil {
		node.Spec = &pb.NodeSpec{}
	}
	if len(next) == 0 {
		next = nil
	}
	node.Spec.Taints = next
	return word, true, nil
}

func newTaintCommand(o *Options) *cobra.Command {
	var sel selection
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "taint (nodes NAME... | node/NAME... | nodes -l SELECTOR | nodes --all) KEY[=VALUE]:EFFECT... KEY[:EFFECT]-...",
		Short: "Add or remove taints of nodes",
		Long: `Taint adds taints to nodes and removes them. A taint keeps pods off a node unless they tolerate it
(spec.tolerations): KEY=VALUE:EFFECT, where

  * the key is a label key: a name of at most 63 characters (letters, digits, '-', '_', '.'),
    optionally after a DNS subdomain prefix and '/' (example.com/gpu);
  * the value is optional and follows the rules of a label value;
  * the effect is NoSchedule (the scheduler places no new pods there), PreferNoSchedule (it
    avoids the node when it can) or NoExecute (pods already there are evicted too, once their
    tolerationSeconds have passed).

A node has at most one taint per key and effect: adding one it already has needs --overwrite,
which replaces its value. KEY:EFFECT- removes the taint with that key and effect, KEY- every taint
with the key; removing a taint the node does not have is an error. Each node is read, changed and
written back with its resourceVersion, so a concurrent change (the node lifecycle controller's
own taints) is retried, not lost.`,
		Example: `  skiff taint nodes w1 dedicated=db:NoSchedule
  skiff taint node/w1 dedicated=analytics:NoSchedule --overwrite
  skiff taint nodes w1 w2 gpu:PreferNoSchedule
  skiff taint nodes -l zone=a maintenance=true:NoExecute
  skiff taint nodes w1 dedicated:NoSchedule-     # remove that taint
  skiff taint nodes w1 dedicated-                # remove every taint with key dedicated`,
		RunE: func(cmd *cobra.Command, args []string) error {
			objects, changes, err := splitArgs(args, "taint", isTaintChange)
			if err != nil {
				return err
			}
			edit, err := parseTaintEdit(changes)
			if err != nil {
				return err
			}
			named, kinds, err := sel.plan(objects, "taint")
			if err != nil {
				return err
			}
			for _, k := range append(kinds, keyKinds(named)...) {
				if k.Kind != "Node" {
					return fmt.Errorf("taints are only on nodes, not %s: skiff taint nodes NAME KEY=VALUE:EFFECT", k.Plural)
				}
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			keys, err := sel.resolve(ctx, c, objects, "taint")
			if err != nil {
				return err
			}
			return changeEach(ctx, o, c, keys, "changed", func(obj *pb.Object) (string, bool, error) {
				return applyTaints(obj.GetNode(), edit, overwrite)
			})
		},
	}
	sel.addFlags(cmd, false)
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace the value of a taint the node already has with the same key and effect")
	return cmd
}

func keyKinds(keys []objectKey) []pb.KindInfo {
	out := make([]pb.KindInfo, len(keys))
	for i, k := range keys {
		out[i] = k.kind
	}
	return out
}
