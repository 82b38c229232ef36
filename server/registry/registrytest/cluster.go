package registrytest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Cluster is a PostgreSQL server of the test's own, made with initdb and
// run with pg_ctl in a temporary directory, so a test can take the database
// away and bring it back (an outage), which the shared test database must
// never suffer.
type Cluster struct {
	dir  string // data directory; the socket lives there too
	bin  string // directory of initdb and pg_ctl
	port int
	// runAs is the account the server runs under: PostgreSQL refuses to
	// run as root, which tests and CI are.
	runAs string
}

// NewCluster starts a cluster for the test and removes it when the test
// ends. Without PostgreSQL's server binaries it skips the test, or fails
// it when CI is set.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := StartCluster()
	if err != nil {
		if errors.Is(err, errNoServerBinaries) && os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var errNoServerBinaries = errors.New("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")

// StartCluster makes a new cluster in a temporary directory and starts it
// on a free loopback port. Close stops it and removes the directory.
func StartCluster() (*Cluster, error) {
	bin, err := serverBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "casare-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		c.runAs = "postgres"
		if err := c.chown(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if c.port, err = freePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// fsync off: an outage here is a stopped server, never a lost disk,
	// and tests should not wait on the disk. synchronous_commit stays on,
	// so a commit that was answered is in the WAL when the server stops.
	if out, err := c.command("initdb", "-D", c.data(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nfsync = off\nfull_page_writes = off\nmax_connections = 300\n", c.port, c.dir)
	if err := os.WriteFile(filepath.Join(c.data(), "postgresql.auto.conf"), []byte(conf), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if c.runAs != "" {
		if err := c.chown(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// URL is the address of database postgres on the cluster.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port is the TCP port the cluster listens on, kept across Stop and Start.
func (c *Cluster) Port() int { return c.port }

// Start starts the server and waits until it takes connections.
func (c *Cluster) Start() error {
	out, err := c.command("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "server.log"), "-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		return fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	return nil
}

// Stop stops the server at once, the way a crash or a lost host would:
// open connections are cut, nothing is shut down cleanly.
func (c *Cluster) Stop() error {
	out, err := c.command("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// Close stops the server if it runs and removes its directory.
func (c *Cluster) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := c.command("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop")
	_ = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...).Run()
	return os.RemoveAll(c.dir)
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(c.bin, name)
	if c.runAs != "" {
		return exec.Command("runuser", append([]string{"-u", c.runAs, "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

// chown gives the cluster's directory to the account the server runs as.
func (c *Cluster) chown() error {
	u, err := user.Lookup(c.runAs)
	if err != nil {
		return fmt.Errorf("PostgreSQL runs as %s when tests run as root: %w", c.runAs, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(c.dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// serverBinaries finds initdb and pg_ctl: on PATH, or in Debian's
// versioned directory (the newest).
func serverBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errNoServerBinaries
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
