package cli

// skiff token create|list|delete: bearer tokens for users (see
// docs/architecture.md, Security). A token is `<id>.<secret>`; the masters
// keep only the SHA-256 of the secret, with the role, expiry and
// description, as a Secret skiff-token-<id> of type skiff.dev/token in
// namespace skiff-system (server/tokens.go reads the same form). Creating
// one is an ordinary write, so only an admin can.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// The stored form of a token; server/tokens.go reads it.
const (
	tokenNamespace      = "skiff-system"
	tokenSecretPrefix   = "skiff-token-"
	tokenSecretType     = "skiff.dev/token"
	tokenKeyHash        = "tokenHash"
	tokenKeyRole        = "role"
	tokenKeyExpires     = "expires"
	tokenKeyDescription = "description"
)

// TokenRoles are the roles a token may carry.
var TokenRoles = []string{"viewer", "controller", "admin"}

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int) (string, error) {
	b := make([]byte, n)
	out := make([]byte, n)
	for i := 0; i < n; {
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		for _, c := range b {
			// 252 = 7*36: reject the tail so every character is uniform.
			if c < 252 && i < n {
				out[i] = tokenAlphabet[int(c)%len(tokenAlphabet)]
				i++
			}
		}
	}
	return string(out), nil
}

// NewUserToken returns a fresh token and its ID.
func NewUserToken() (token, id string, err error) {
	if id, err = randomString(6); err != nil {
		return "", "", err
	}
	secret, err := randomString(32)
	if err != nil {
		return "", "", err
	}
	return id + "." + secret, id, nil
}

// tokenObject is the Secret that stores token.
func tokenObject(token, role, description string, expires time.Time) *pb.Object {
	id, secret, _ := strings.Cut(token, ".")
	h := sha256.Sum256([]byte(secret))
	data := map[string][]byte{tokenKeyHash: []byte(hex.EncodeToString(h[:])), tokenKeyRole: []byte(role)}
	if !expires.IsZero() {
		data[tokenKeyExpires] = []byte(expires.UTC().Format(time.RFC3339))
	}
	if description != "" {
		data[tokenKeyDescription] = []byte(description)
	}
	return pb.Wrap(&pb.Secret{ApiVersion: "v1", Kind: "Secret", Type: tokenSecretType, Data: data,
		Metadata: &pb.ObjectMeta{Namespace: tokenNamespace, Name: tokenSecretPrefix + id,
			Labels: map[string]string{"skiff.dev/token-role": role}}})
}

// TokenCommands are `token create`, `token list` and `token delete`;
// cmd/skiff adds them to its `token` command. They read the root's
// connection flags when they run.
func TokenCommands() []*cobra.Command {
	var role, description string
	var ttl time.Duration
	var printConfig bool
	create := &cobra.Command{
		Use:   "create --role viewer|controller|admin",
		Short: "Create a bearer token for a user or an out-of-process controller (admins only)",
		Long: `create makes a token and prints it once: the masters keep only its hash. Give it to a
colleague with the cluster CA (--print-config prints a ready CLI configuration with servers,
CA and token). Roles: viewer reads everything but Secrets; controller also writes workload
kinds; admin does everything.`,
		Example: `  skiff token create --role viewer --ttl 168h --description "alice, read-only"
  skiff token create --role viewer --print-config > alice.yaml   # SKIFF_CONFIG=alice.yaml skiff get pods`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(TokenRoles, role) {
				return fmt.Errorf("--role: want one of %s, got %q", strings.Join(TokenRoles, ", "), role)
			}
			if ttl < 0 {
				return errors.New("--ttl: must not be negative (0 never expires)")
			}
			o := optionsFrom(cmd)
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			token, id, err := NewUserToken()
			if err != nil {
				return err
			}
			var expires time.Time
			if ttl > 0 {
				expires = time.Now().Add(ttl)
			}
			ns := pb.Wrap(&pb.Namespace{ApiVersion: "v1", Kind: "Namespace", Metadata: &pb.ObjectMeta{Name: tokenNamespace}})
			if _, err := c.Create(ctx, ns); err != nil && status.Code(err) != codes.AlreadyExists {
				return fmt.Errorf("create namespace %s: %w", tokenNamespace, err)
			}
			if _, err := c.Create(ctx, tokenObject(token, role, description, expires)); err != nil {
				return fmt.Errorf("store token %s: %w", id, err)
			}
			if !printConfig {
				fmt.Fprintln(cmd.OutOrStdout(), token)
				return nil
			}
			conn := o.connection()
			caPEM, err := conn.CAPEM()
			if err != nil {
				return fmt.Errorf("--print-config: %w", err)
			}
			servers, err := conn.ResolveServers()
			if err != nil {
				return err
			}
			data, err := yaml.Marshal(client.ConfigFile{Servers: servers, Token: token, CA: string(caPEM)})
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer, controller or admin (required)")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid; 0 never expires")
	create.Flags().StringVar(&description, "description", "", "who or what the token is for")
	create.Flags().BoolVar(&printConfig, "print-config", false, "print a CLI configuration (servers, CA, token) instead of the bare token")

	list := &cobra.Command{
		Use:   "list",
		Short: "List bearer tokens (IDs, roles, expiry; never the secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := optionsFrom(cmd)
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			items, _, err := c.List(ctx, "Secret", client.ListOptions{Namespace: tokenNamespace})
			if err != nil {
				return err
			}
			sort.Slice(items, func(i, j int) bool { return items[i].Meta().GetName() < items[j].Meta().GetName() })
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(w, "ID\tROLE\tEXPIRES\tDESCRIPTION")
			now := time.Now()
			for _, it := range items {
				s := it.GetSecret()
				if s.GetType() != tokenSecretType {
					continue
				}
				expires := "never"
				if e := string(s.GetData()[tokenKeyExpires]); e != "" {
					expires = e
					if t, err := time.Parse(time.RFC3339, e); err == nil && !now.Before(t) {
						expires += " (expired)"
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", strings.TrimPrefix(s.GetMetadata().GetName(), tokenSecretPrefix),
					s.GetData()[tokenKeyRole], expires, dash(string(s.GetData()[tokenKeyDescription])))
			}
			return w.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a bearer token: every master refuses it from its next call",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := optionsFrom(cmd)
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			id, _, _ := strings.Cut(args[0], ".") // a whole token works too
			if _, err := c.Delete(ctx, &pb.DeleteOp{Kind: "Secret", Namespace: tokenNamespace, Name: tokenSecretPrefix + id}); err != nil {
				if status.Code(err) == codes.NotFound {
					return fmt.Errorf("no token %q: see skiff token list", id)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s deleted\n", id)
			return nil
		},
	}
	return []*cobra.Command{create, list, del}
}

// optionsFrom reads the root command's connection flags (these commands
// hang under cmd/skiff's `token`, outside NewRootCommand's Options).
func optionsFrom(cmd *cobra.Command) *Options {
	o := &Options{Out: cmd.OutOrStdout(), ErrOut: cmd.ErrOrStderr(), In: cmd.InOrStdin(), Timeout: 30 * time.Second}
	f := cmd.Flags()
	o.Server, _ = f.GetString("server")
	o.TokenFile, _ = f.GetString("token-file")
	o.Token, _ = f.GetString("token")
	o.CAFile, _ = f.GetString("ca-file")
	o.Insecure, _ = f.GetBool("insecure")
	if d, err := f.GetDuration("request-timeout"); err == nil {
		o.Timeout = d
	}
	return o
}
