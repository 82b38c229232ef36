// Command gen writes the files generated from the step definitions: the
// workflow JSON Schema for editors, the step catalogue in Markdown and the
// table of step specs the control plane and casarectl validate with.
// Run it with go generate ./agent/step/library.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/casarerpa/casare/agent/step/library"
	"github.com/casarerpa/casare/agent/workflow"
)

func main() {
	schemaPath := flag.String("schema", "", "where to write the workflow JSON Schema")
	cataloguePath := flag.String("catalogue", "", "where to write the Markdown step catalogue")
	tablePath := flag.String("table", "", "where to write the Go table of step specs")
	flag.Parse()
	specs := library.Catalogue(library.Config{}).Specs()
	schema, err := workflow.Schema(specs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	table, err := library.SpecTable(specs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	for path, data := range map[string][]byte{*schemaPath: schema, *cataloguePath: library.Markdown(specs), *tablePath: table} {
		if path == "" {
			continue
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}
