package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// Config is the casarectl config file: named contexts, one of them current.
type Config struct {
	CurrentContext string              `json:"current-context,omitempty"`
	Contexts       map[string]*Context `json:"contexts,omitempty"`
}

// Context is one control plane to talk to.
type Context struct {
	Server string `json:"server,omitempty"`
	Token  string `json:"token,omitempty"`
	// CAFile is a PEM file of the CA that signed an https server's
	// certificate, for a server whose certificate the system does not
	// trust (--tls-self-signed).
	CAFile string `json:"ca-file,omitempty"`
	// InsecureSkipTLSVerify trusts any certificate the server shows.
	InsecureSkipTLSVerify bool `json:"insecure-skip-tls-verify,omitempty"`
}

// configPath is --config, CASARE_CONFIG, or the XDG default.
func (a *app) configPath() string {
	if a.configFlag != "" {
		return a.configFlag
	}
	if p := a.env.Getenv("CASARE_CONFIG"); p != "" {
		return p
	}
	dir := a.env.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		dir = filepath.Join(a.env.Getenv("HOME"), ".config")
	}
	return filepath.Join(dir, "casare", "config.yaml")
}

// loadConfig reads the config file; a missing file is an empty config.
func (a *app) loadConfig() (*Config, error) {
	path := a.configPath()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{Contexts: map[string]*Context{}}, nil
	}
	if err != nil {
		return nil, usageError("read config %s: %v", path, err)
	}
	cfg := &Config{}
	if err := yaml.UnmarshalStrict(b, cfg); err != nil {
		return nil, usageError("config %s: %v", path, err)
	}
	if cfg.Contexts == nil {
		cfg.Contexts = map[string]*Context{}
	}
	return cfg, nil
}

// saveConfig writes the config file readable by its owner only: it holds
// tokens.
func (a *app) saveConfig(cfg *Config) error {
	path := a.configPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return usageError("write config: %v", err)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return usageError("write config: %v", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return usageError("write config: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return usageError("write config: %v", err)
	}
	return nil
}

func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Manage named contexts (server and token pairs)"}

	var server, token, caFile string
	var tokenStdin, insecure bool
	set := &cobra.Command{
		Use:   "set-context NAME [--server URL] [--token-stdin] [--ca-file F] [--insecure-skip-tls-verify]",
		Short: "Create or update a context",
		Long: "Create or update a context. --token-stdin reads the token from standard input\n" +
			"(echo \"$TOKEN\" | casarectl config set-context prod --token-stdin), so that it\n" +
			"never shows in the process list or the shell history as --token would.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tokenStdin && cmd.Flags().Changed("token") {
				return usageError("--token-stdin: give it or --token, not both")
			}
			if tokenStdin {
				read, err := readToken(a.env.Stdin)
				if err != nil {
					return err
				}
				token = read
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			c := cfg.Contexts[args[0]]
			if c == nil {
				c = &Context{}
				cfg.Contexts[args[0]] = c
			}
			if cmd.Flags().Changed("server") {
				c.Server = strings.TrimRight(server, "/")
			}
			if cmd.Flags().Changed("token") || tokenStdin {
				c.Token = token
			}
			if cmd.Flags().Changed("ca-file") {
				if caFile != "" {
					abs, err := filepath.Abs(caFile)
					if err != nil {
						return usageError("--ca-file: %v", err)
					}
					if _, err := loadCAFile(abs); err != nil {
						return err
					}
					caFile = abs
				}
				c.CAFile = caFile
			}
			if cmd.Flags().Changed("insecure-skip-tls-verify") {
				c.InsecureSkipTLSVerify = insecure
			}
			if cfg.CurrentContext == "" {
				cfg.CurrentContext = args[0]
			}
			if err := a.saveConfig(cfg); err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "context %q saved in %s\n", args[0], a.configPath())
			return nil
		},
	}
	set.Flags().StringVar(&server, "server", "", "control plane URL")
	set.Flags().StringVar(&token, "token", "", "API token (shows in the process list: prefer --token-stdin)")
	set.Flags().BoolVar(&tokenStdin, "token-stdin", false, "read the API token from standard input")
	set.Flags().StringVar(&caFile, "ca-file", "", "PEM file of the CA that signed the server's certificate (ca.crt of its data dir for --tls-self-signed)")
	set.Flags().BoolVar(&insecure, "insecure-skip-tls-verify", false, "trust any certificate the server shows (testing only)")

	use := &cobra.Command{
		Use:   "use-context NAME",
		Short: "Make a context the current one",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if _, ok := cfg.Contexts[args[0]]; !ok {
				return usageError("no context named %q (have: %s)", args[0], strings.Join(contextNames(cfg), ", "))
			}
			cfg.CurrentContext = args[0]
			if err := a.saveConfig(cfg); err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "now using context %q\n", args[0])
			return nil
		},
	}
	get := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CURRENT\tNAME\tSERVER\tTOKEN")
			for _, name := range contextNames(cfg) {
				c := cfg.Contexts[name]
				mark, hasToken := "", "no"
				if name == cfg.CurrentContext {
					mark = "*"
				}
				if c.Token != "" {
					hasToken = "yes"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", mark, name, c.Server, hasToken)
			}
			return w.Flush()
		},
	}
	current := &cobra.Command{
		Use:   "current-context",
		Short: "Print the current context",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return usageError("no current context; create one with casarectl config set-context")
			}
			fmt.Fprintln(a.env.Stdout, cfg.CurrentContext)
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete-context NAME",
		Short: "Delete a context",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if _, ok := cfg.Contexts[args[0]]; !ok {
				return usageError("no context named %q", args[0])
			}
			delete(cfg.Contexts, args[0])
			if cfg.CurrentContext == args[0] {
				cfg.CurrentContext = ""
			}
			return a.saveConfig(cfg)
		},
	}
	cmd.AddCommand(set, use, get, current, del)
	return cmd
}

// maxTokenBytes bounds what --token-stdin reads: tokens are short, and a
// file piped by mistake should fail, not fill the config.
const maxTokenBytes = 4096

// readToken reads a token from r: its first line, without surrounding
// space.
func readToken(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTokenBytes+1))
	if err != nil {
		return "", usageError("--token-stdin: %v", err)
	}
	if len(b) > maxTokenBytes {
		return "", usageError("--token-stdin: more than %d bytes on standard input; pipe the token alone", maxTokenBytes)
	}
	line, rest, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSpace(line)
	switch {
	case line == "":
		return "", usageError("--token-stdin: standard input holds no token")
	case strings.TrimSpace(rest) != "":
		return "", usageError("--token-stdin: standard input holds more than one line; pipe the token alone")
	case strings.ContainsFunc(line, func(r rune) bool { return r < ' ' || r == 0x7f || r == ' ' }):
		return "", usageError("--token-stdin: the token holds a space or control character")
	}
	return line, nil
}

func contextNames(cfg *Config) []string {
	names := make([]string, 0, len(cfg.Contexts))
	for n := range cfg.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
