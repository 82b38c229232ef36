package casarev1_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the API code into a temporary
// directory with the pinned tools and fails when the committed code differs,
// so a .proto change cannot land without its generated code.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds buf; skipped with -short")
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	run(t, filepath.Join(root, "rpc", "internal", "protodeps"), "go", "run", ".", "../..")
	run(t, root, "go", "tool", "-modfile=rpc/tools.mod", "buf", "generate", "--path", "rpc/casare", "--path", "rpc/grpc", "-o", out)

	fresh := generatedFiles(t, filepath.Join(out, "rpc"))
	committed := generatedFiles(t, filepath.Join(root, "rpc"))
	for name, want := range fresh {
		got, ok := committed[name]
		switch {
		case !ok:
			t.Errorf("rpc/%s is not committed; run make generate", name)
		case !bytes.Equal(got, want):
			t.Errorf("rpc/%s is stale; run make generate", name)
		}
	}
	for name := range committed {
		if _, ok := fresh[name]; !ok {
			t.Errorf("rpc/%s is generated from no .proto; delete it", name)
		}
	}
}

func run(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// generatedFiles reads every generated Go file below dir, by relative path.
func generatedFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".pb.go") || strings.HasSuffix(path, ".connect.go")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
