// Input of the emulation check programs (kquant_check, legacy_check): a
// case file of four little-endian uint32 (weight type, rows, cols, tokens),
// the ggml weight blocks, then the activations as f32. Each program checks
// the case against its formats and writes its results to the output file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

struct check_case {
	int type, rows, cols, n;
	std::vector<uint8_t> in;  // the whole file, header included
};

static bool check_read_all(const char *path, std::vector<uint8_t> &buf) {
	FILE *f = fopen(path, "rb");
	if (f == nullptr) return false;
	uint8_t chunk[1 << 16];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf.insert(buf.end(), chunk, chunk + n);
	bool ok = !ferror(f);
	fclose(f);
	return ok;
}

// check_read_case parses the command line (IN OUT) and the case header,
// reporting problems on stderr under the program's name.
static bool check_read_case(int argc, char **argv, const char *name, check_case &c) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s IN OUT\n", name);
		return false;
	}
	if (!check_read_all(argv[1], c.in) || c.in.size() < 16) {
		fprintf(stderr, "%s: cannot read %s\n", name, argv[1]);
		return false;
	}
	uint32_t hdr[4];
	memcpy(hdr, c.in.data(), sizeof hdr);
	c.type = (int)hdr[0];
	c.rows = (int)hdr[1];
	c.cols = (int)hdr[2];
	c.n = (int)hdr[3];
	return true;
}
