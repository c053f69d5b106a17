import DiskQueue
import Foundation

// Helpers the tests run as separate processes, so they can be SIGKILLed or measured alone.
//
//   bcpipe-testkit queue-writer DIR WRITERS BATCHES RECORDS [SEGMENT_BYTES] [RUN]
//       appends BATCHES batches per writer; prints "acked W I" once batch I of writer W is durable.
//       Record J of batch I of writer W reads "RUN W I J xxx…".
//   bcpipe-testkit queue-drain DIR
//       reads and acknowledges everything, one batch at a time; prints "drained N events, peak RSS K kB"

/// Unbuffered, so a parent sees each line before a SIGKILL.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
let args = CommandLine.arguments

func peakRSSKilobytes() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    return 0
}

switch args.count > 1 ? args[1] : "" {
case "queue-writer":
    let dir = args[2]
    let writers = Int(args[3])!
    let batches = Int(args[4])!
    let records = Int(args[5])!
    var config = DiskQueueConfiguration(directory: dir)
    config.freeDiskReserve = 0
    if args.count > 6 { config.segmentBytes = Int(args[6])! }
    let run = args.count > 7 ? args[7] : "0"
    if let limit = ProcessInfo.processInfo.environment["BCPIPE_TESTKIT_FILE_SIZE_LIMIT"].flatMap(Int.init) {
        // A file-size limit makes writes past it fail (EFBIG), as a failing disk would.
        signal(SIGXFSZ, SIG_IGN)
        var rl = rlimit(rlim_cur: rlim_t(limit), rlim_max: rlim_t(limit))
        setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &rl)
    }
    let queue = try DiskQueue(config)
    await withTaskGroup(of: Void.self) { group in
        for w in 0..<writers {
            group.addTask {
                for i in 0..<batches {
                    let batch = (0..<records).map {
                        Array("\(run) \(w) \(i) \($0) \(String(repeating: "x", count: 150))".utf8)
                    }
                    do {
                        _ = try await queue.append(batch, oldestTimestamp: Int64(i))
                        say("acked \(w) \(i)")
                    } catch let e as DiskQueueError {
                        say("failed \(w) \(i) \(e.code.rawValue) \(e.message)")
                        return
                    } catch {
                        say("failed \(w) \(i) \(error)")
                        return
                    }
                }
            }
        }
    }
    queue.close()
case "queue-drain":
    let queue = try DiskQueue(DiskQueueConfiguration(directory: args[2]))
    let reader = queue.makeReader()
    var events = 0
    while true {
        let batches = try reader.next(maxFrames: 1)
        guard let b = batches.first else { break }
        events += b.records.count
        try queue.ack(through: b.end, nextIndex: b.endIndex)
    }
    queue.close()
    say("drained \(events) events, peak RSS \(peakRSSKilobytes()) kB")
default:
    FileHandle.standardError.write(Data("usage: bcpipe-testkit queue-writer|queue-drain …\n".utf8))
    exit(2)
}
