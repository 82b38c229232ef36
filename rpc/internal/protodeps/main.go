// Command protodeps writes the .proto sources of schema dependencies that no
// Go module ships as source (protovalidate's buf/validate/validate.proto)
// from the descriptors compiled into their Go packages. make generate runs it
// before buf, so the schema always matches the protovalidate version pinned
// in go.mod and no build needs a schema registry. It is a module of its own
// so that its dependencies stay out of the product's go.mod; keep its
// protovalidate version equal to the one there.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	validate "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"github.com/jhump/protoreflect/v2/protoprint"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: protodeps OUTPUT_DIR")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "protodeps:", err)
		os.Exit(1)
	}
}

func write(root string) error {
	fd := validate.File_buf_validate_validate_proto
	path := filepath.Join(root, filepath.FromSlash(fd.Path()))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	printer := protoprint.Printer{}
	if err := printer.PrintProtoFile(fd, f); err != nil {
		f.Close()
		return fmt.Errorf("print %s: %w", fd.Path(), err)
	}
	return f.Close()
}
