// Copied verbatim from shared/seed/atlas-stream-processor-tour.md (processor lifetime),
// split so the test can check the state between the steps; see test_seed_tour.py.
// get list of processors
sp.listStreamProcessors();

// This gets a processor object in the mongosh.
let myProcessor = sp.getProcessor('myGroupTempStatsProcessor');

// start a stopped / paused processor
myProcessor.start();
