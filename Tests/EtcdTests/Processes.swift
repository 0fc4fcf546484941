import Support

/// The epochfs binary built beside the tests.
let epochfsPath = productPath("epochfs")
