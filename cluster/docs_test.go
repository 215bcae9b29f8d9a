package cluster

import (
	"os"
	"regexp"
	"testing"

	"github.com/callbox/callbox/config"
)

// The TOML examples of docs/cluster.md are what people paste: each must load.
func TestClusterDocExamplesParse(t *testing.T) {
	data, err := os.ReadFile("../docs/cluster.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(data, -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d toml examples, want the [cluster] section and a node's file", len(blocks))
	}
	for i, m := range blocks {
		if _, err := config.Parse(m[1]); err != nil {
			t.Errorf("example %d: %v\n%s", i+1, err, m[1])
		}
	}
}
