// The real-node tests' probe image: one static binary, standard library only.
module order-pipeline/tests/real-node-probe

go 1.22
